"""TLS on the gRPC listener (transport/tls.py): server certificates, client certificates (mTLS), and plaintext
only on loopback unless allowed, with the Python client and the CLI connecting over TLS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client import Client
from moments_client.errors import MomentsError
from tests.live import REPO, _env, free_port, start_server
from tests.pki import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_mtls_and_the_clients(shapes_model_dir: Path, pki: dict[str, Path], tmp_path: Path) -> None:
    target = f"localhost:{free_port()}"
    tls = ["--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"])]
    server = start_server(shapes_model_dir, tmp_path / "mtls", target, *tls, "--tls-client-ca", str(pki["ca"]))
    try:
        with Client(target, tls=str(pki["ca"]), client_cert=(pki["client_cert"], pki["client_key"])) as client:
            assert client.info().model.name == "shapes-demo"
        with Client(target, tls=str(pki["ca"]), timeout=5) as no_cert, pytest.raises(MomentsError) as refused:
            no_cert.info()
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as ch, pytest.raises(grpc.RpcError) as e:
            pb_grpc.VideoSearchStub(ch).Info(pb.InfoRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # the CLI, with its certificate from the environment
        env = _env() | {"MOMENTS_CLIENT_CERT": str(pki["client_cert"]), "MOMENTS_CLIENT_KEY": str(pki["client_key"])}
        cli = subprocess.run(
            [sys.executable, "-m", "moments_client.cli", "--target", target, "--ca-cert", str(pki["ca"]), "info"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0 and "shapes-demo" in cli.stdout, cli.stderr
    finally:
        server.stop()


def test_plaintext_only_on_loopback_unless_allowed(shapes_model_dir: Path, tmp_path: Path) -> None:
    listen = f"0.0.0.0:{free_port()}"
    refused = subprocess.run(
        [sys.executable, "-m", "moments_server", "--listen", listen, "--model-dir", str(shapes_model_dir),
         "--store", f"embedded:{tmp_path / 'a'}", "--metrics-listen", "127.0.0.1:0"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2
    assert f"refusing to serve plaintext on {listen} (--listen)" in refused.stderr and "Traceback" not in refused.stderr
    half = subprocess.run(
        [sys.executable, "-m", "moments_server", "--tls-cert", "x.pem", "--model-dir", str(shapes_model_dir)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert half.returncode == 2 and "needs both --tls-cert and --tls-key" in half.stderr
    allowed = start_server(shapes_model_dir, tmp_path / "b", listen, "--allow-insecure")
    try:
        assert "PLAINTEXT" in allowed.output()
        with Client(f"127.0.0.1:{listen.rsplit(':', 1)[1]}") as client:
            assert client.info().model.name == "shapes-demo"
    finally:
        allowed.stop()
