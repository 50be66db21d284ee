"""Settings from the command line and MOMENTS_* variables (config.parse_settings, pydantic-settings' CLI), and
their way down to the components that app.py and the launcher build with them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from moments_server.app import start_wire_listener
from moments_server.config import Settings, parse_settings
from moments_server.core import open_store
from moments_server.store.embedded import Engine, ThreadedWireServer, vectors
from moments_server.workers import Launcher
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def _no_moments_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only what a test sets: none of the MOMENTS_* variables of whoever runs the tests."""
    for name in list(os.environ):
        if name.startswith("MOMENTS_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(vectors, "OMP_THREADS", vectors.OMP_THREADS)  # the Engines made here set it
    yield


@contextlib.contextmanager
def engine_of(settings: Settings) -> Iterator[Engine]:
    connector = open_store(settings)  # as core.open_core opens it
    try:
        engine = connector.local_engine()
        assert engine is not None
        yield engine
    finally:
        connector.close()


def test_nested_engine_flags_reach_the_engine(tmp_path: Path) -> None:
    settings = parse_settings(
        [
            "--store",
            f"embedded:{tmp_path / 'data'}",
            "--engine.omp-threads",
            "3",
            "--no-engine.deferred-index",
            "--engine.read-cache-rows",
            "0",
        ]
    )
    with engine_of(settings) as engine:
        assert vectors.OMP_THREADS == 3
        assert engine.sets.deferred is False
        assert engine.cache.capacity == 0


def test_nested_engine_env_reaches_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_ENGINE__OMP_THREADS", "0")  # 0: OpenMP's default
    monkeypatch.setenv("MOMENTS_ENGINE__READ_CACHE_ROWS", "123")
    monkeypatch.setenv("MOMENTS_STORE", f"embedded:{tmp_path / 'data'}")
    settings = parse_settings([])
    with engine_of(settings) as engine:
        assert vectors.OMP_THREADS is None and engine.cache.capacity == 123
        assert engine.sets.deferred is True  # the default, untouched


def test_flags_win_over_env_and_env_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_MAX_UPLOAD_BYTES", "5000")
    monkeypatch.setenv("MOMENTS_GRACE_S", "3")
    monkeypatch.setenv("MOMENTS_ENGINE__OMP_THREADS", "2")
    monkeypatch.setenv("MOMENTS_ENGINE__READ_CACHE_ROWS", "11")
    s = parse_settings(["--max-upload-bytes", "7000", "--engine.omp-threads", "4"])
    assert s.max_upload_bytes == 7000 and s.grace_s == 3.0
    # a nested flag replaces that field only: the other nested variable still counts
    assert (s.engine.omp_threads, s.engine.read_cache_rows, s.engine.deferred_index) == (4, 11, True)
    assert parse_settings([]).max_upload_bytes == 5000
    monkeypatch.delenv("MOMENTS_MAX_UPLOAD_BYTES")
    assert parse_settings([]).max_upload_bytes == Settings.model_fields["max_upload_bytes"].default


def test_boolean_flags_and_their_negations(monkeypatch: pytest.MonkeyPatch) -> None:
    s = parse_settings(["--no-autotune-batches", "--allow-insecure"])
    assert s.autotune_batches is False and s.allow_insecure is True
    monkeypatch.setenv("MOMENTS_AUTOTUNE_BATCHES", "false")
    monkeypatch.setenv("MOMENTS_ADB_FULL_IMPORT", "1")
    assert parse_settings([]).autotune_batches is False
    assert parse_settings([]).adb_full_import is True
    assert parse_settings(["--autotune-batches", "--no-adb-full-import"]).autotune_batches is True
    assert parse_settings(["--no-adb-full-import"]).adb_full_import is False


def test_the_launchers_worker_flags_override_the_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker gets the user's flags, then the launcher's: the last of a flag given twice wins, and an empty
    value (--store-listen "") is a value."""
    monkeypatch.setenv("MOMENTS_STORE_LISTEN", "127.0.0.1:9")
    argv = ["--workers", "3", "--store-listen", "127.0.0.1:7", "--intra-op-threads", "5", "--engine.omp-threads", "2"]
    launcher = Launcher(parse_settings(argv), argv)
    try:
        worker = parse_settings(launcher.worker_args(1)[3:])  # after python -m moments_server
    finally:
        launcher.metrics_dir.rmdir()
    assert (worker.workers, worker.worker_index, worker.store_listen) == (1, 1, "")
    assert worker.intra_op_threads == 5 and worker.metrics_listen == "127.0.0.1:0"
    assert worker.engine.omp_threads == 2


def test_bad_values_and_unknown_flags_are_refused() -> None:
    with pytest.raises(SystemExit) as e:
        parse_settings(["--no-such-flag", "1"])
    assert e.value.code == 2
    with pytest.raises(ValueError, match="must be >= 0"):
        parse_settings(["--engine.omp-threads", "-1"])
    with pytest.raises(ValueError, match="must be > 0"):
        parse_settings(["--store-probe-every-s", "0"])


def _run_server(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(REPO / p) for p in ("server", "clients/python")))
    return subprocess.run(
        [sys.executable, "-m", "moments_server", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_the_command_line_lists_every_setting_and_refuses_unknown_flags() -> None:
    out = _run_server("--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: moments-server")
    for name, field in Settings.model_fields.items():
        if name == "engine":
            for sub in field.annotation.model_fields:  # type: ignore[union-attr]
                assert f"--engine.{sub.replace('_', '-')}" in out.stdout, sub
        else:
            assert f"--{name.replace('_', '-')}" in out.stdout, name
    assert "--no-autotune-batches" in out.stdout and "--no-engine.deferred-index" in out.stdout
    bad = _run_server("--max-upload-byte", "1")  # misspelt: no prefix matching either
    assert bad.returncode == 2
    assert "unrecognized arguments: --max-upload-byte" in bad.stderr


def test_a_refused_value_is_one_line_naming_the_flag_and_variable_not_a_traceback() -> None:
    bad = _run_server("--ingest-nice", "30", "--engine.omp-threads", "-2")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert bad.stderr.strip() == (
        "moments-server: --engine.omp-threads (MOMENTS_ENGINE__OMP_THREADS): must be >= 0, not '-2'; --ingest-nice "
        "(MOMENTS_INGEST_NICE): must be between 0 and 19 (a nice increment; unset = the provider's default), not '30'"
    )
    env_bad = subprocess.run(
        [sys.executable, "-m", "moments_server"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(
            os.environ,
            MOMENTS_EVENT_LOOP="tokio",
            PYTHONPATH=os.pathsep.join(str(REPO / p) for p in ("server", "clients/python")),
        ),
    )
    assert env_bad.returncode == 2 and "Traceback" not in env_bad.stderr, env_bad.stderr
    assert "--event-loop (MOMENTS_EVENT_LOOP): Input should be 'uvloop' or 'asyncio', not 'tokio'" in env_bad.stderr


def test_wire_listener_and_sdk_pool_settings_reach_them(tmp_path: Path) -> None:
    settings = parse_settings(
        [
            "--store",
            f"embedded:{tmp_path / 'data'}",
            "--store-listen",
            "127.0.0.1:0",
            "--store-listen-user",
            "admin",
            "--store-listen-password",
            "pw",
            "--store-listen-max-connections",
            "3",
            "--store-listen-pre-auth-timeout-s",
            "4.5",
        ]
    )
    connector = open_store(settings)
    engine = connector.local_engine()
    assert engine is not None

    async def listen() -> tuple[int, float]:
        wire = await start_wire_listener(settings, engine)
        assert wire is not None
        try:
            return wire.max_connections, wire.pre_auth_timeout_s
        finally:
            await wire.stop()

    try:
        assert asyncio.run(listen()) == (3, 4.5)
        with ThreadedWireServer(engine, port=0, ssl=False, users={"admin": "pw"}) as srv:
            remote = parse_settings(
                ["--store", f"aperturedb://admin:pw@127.0.0.1:{srv.port}?ssl=0", "--store-pool-size", "2"]
            )
            sdk = open_store(remote)
            try:
                r, _ = sdk.query([{"GetStatus": {}}])
                assert r[0]["GetStatus"]["status"] == 0
                assert sdk.pool_size == 2  # type: ignore[attr-defined]
            finally:
                sdk.close()
    finally:
        connector.close()


def test_event_loop_setting_picks_the_loop() -> None:
    """uvloop by default (config.event_loop); --event-loop asyncio gives asyncio's own loop."""
    from moments_server.__main__ import run_loop

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert parse_settings([]).event_loop == "uvloop"
    assert run_loop(loop_module(), parse_settings([]).event_loop).startswith("uvloop")
    chosen = parse_settings(["--event-loop", "asyncio"]).event_loop
    assert run_loop(loop_module(), chosen).startswith("asyncio")
    with pytest.raises(ValueError, match="'uvloop' or 'asyncio'"):
        parse_settings(["--event-loop", "trio"])
