"""The ``moments`` command: ingest videos, search them, and look after the library.

    moments sample-video demo.mp4          # shapes at known seconds (works offline)
    moments ingest demo.mp4                # or folders, recursively, with --parallel N streams
    moments ingest rtsp://cam/live --id cam-7   # the server pulls a camera (or http(s) HLS, udp); Ctrl-C ends it
    moments search "a red circle"          # a table; --json for scripts

Exit codes: 0 ok; 1 the server refused a call, or some files failed to ingest; 2 bad usage or an unreadable
local file; 3 the server is unreachable or did not answer in time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from moments_client.client import Client
from moments_client.errors import MomentsError
from moments_client.types import (
    IngestAccepted,
    IngestCommitted,
    IngestDone,
    IngestEvent,
    IngestProgress,
    MetaValue,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_TARGET = "127.0.0.1:50051"
VIDEO_EXTENSIONS = frozenset(
    [
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".flv",
        ".wmv",
        ".3gp",
        ".ogv",
        ".mxf",
        ".gif",
    ]
)


def _console(stderr: bool) -> Console:
    # Tables stay readable when piped: rich would use 80 columns; take COLUMNS, or a wide page.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, highlight=False, emoji=False, width=width)


out = _console(stderr=False)
err = _console(stderr=True)


class UsageError(Exception):
    """Bad arguments or an unreadable local file (exit 2)."""


class Cancelled(Exception):
    """Ctrl-C: the uploads in flight stop at their next event (the server keeps nothing of them)."""


# ----------------------------------------------------------------------------------------------- values


_WHERE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.-]*)\s*(==|!=|>=|<=|=|>|<|\s+in\s+)\s*(.*)$", re.DOTALL)


def parse_value(text: str) -> MetaValue:
    """``true``/``false`` → bool, a number → float, an RFC 3339 date-time → datetime, ``"quoted"`` → str."""
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return float(s)
    except ValueError:
        pass
    if re.match(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", s):
        try:
            return datetime.fromisoformat(s)
        except ValueError:
            pass
    return s


def parse_where(items: Sequence[str]) -> list[tuple[str, str, Any]]:
    """``key=value``, ``key!=value``, ``key>=value`` (also ``>``, ``<``, ``<=``), ``key in a,b,c``."""
    triples: list[tuple[str, str, Any]] = []
    for item in items:
        m = _WHERE.match(item)
        if not m:
            raise UsageError(f"--where {item!r}: expected key=value, key!=value, key>=value, ... or 'key in a,b'")
        key, op, raw = m.group(1), m.group(2).strip(), m.group(3)
        if key == "video_id":
            raise UsageError(f"--where {item!r}: video ids are not metadata; use --video ID (repeatable)")
        if op == "in":
            triples.append((key, "in", [parse_value(v) for v in raw.split(",") if v.strip()]))
        else:
            triples.append((key, "==" if op == "=" else op, parse_value(raw)))
    return triples


def parse_meta(items: Sequence[str]) -> dict[str, MetaValue]:
    meta: dict[str, MetaValue] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--meta {item!r}: expected key=value")
        meta[key.strip()] = parse_value(raw)
    return meta


def fmt_value(v: MetaValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def fmt_meta(meta: dict[str, MetaValue]) -> str:
    return " ".join(f"{k}={fmt_value(v)}" for k, v in meta.items())


def fmt_time(rfc3339: str) -> str:
    """An RFC 3339 instant as `YYYY-MM-DD HH:MM:SS` in local time (as given when it does not parse)."""
    try:
        return datetime.fromisoformat(rfc3339).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return rfc3339


def upload_rate(received: int, seconds: float) -> str:
    """Bytes received over the seconds the upload has taken, e.g. "1.2 MiB/s"."""
    return f"{fmt_bytes(received / seconds)}/s" if seconds > 0 and received > 0 else ""


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# ----------------------------------------------------------------------------------------------- commands


def client_of(args: argparse.Namespace) -> Client:
    tls: bool | str | None = args.ca_cert or (True if args.tls else None)
    if bool(args.client_cert) != bool(args.client_key):
        raise SystemExit("moments: --client-cert and --client-key go together")
    cert = (args.client_cert, args.client_key) if args.client_cert else None
    return Client(args.target, token=args.token or None, tls=tls, client_cert=cert, timeout=args.timeout)


@dataclass
class Job:
    path: Path
    video_id: str
    size: int | None = None
    status: str = "pending"
    frames: int = 0
    duration_s: float = 0.0
    seconds: float = 0.0
    reason: str = ""


def _sanitize(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._:-]+", "_", text).strip("_") or "video"
    return cleaned[-128:]


def collect(paths: Sequence[str], id_from: str) -> list[Job]:
    """Files as given (any extension) and video files under folders (recursive), with their ids."""
    jobs: list[Job] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if not files:
                jobs.append(Job(p, _sanitize(p.name), status="failed", reason="no video files in this folder"))
            for f in files:
                rel = f.relative_to(p).with_suffix("")
                vid = f.stem if id_from == "name" else ":".join((p.resolve().name, *rel.parts))
                jobs.append(Job(f, _sanitize(vid)))
        else:
            rel = p.with_suffix("")
            vid = p.stem if id_from == "name" else ":".join(part for part in rel.parts if part not in ("/", ".", ".."))
            jobs.append(Job(p, _sanitize(vid)))
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.status == "failed":
            continue
        if job.video_id in seen:
            job.status = "failed"
            job.reason = f"id {job.video_id!r} is also used by {seen[job.video_id].path}; try --id-from path"
        else:
            seen[job.video_id] = job
    return jobs


def _stdin_or_file(path: str, stop: threading.Event, chunk: int = 1 << 16) -> Iterator[bytes]:
    """The bytes of a live source (`-` = standard input, or a file or FIFO) until it ends or `stop` is set."""
    with open(sys.stdin.fileno(), "rb", closefd=False) if path == "-" else open(path, "rb") as f:
        while not stop.is_set():
            data = f.read1(chunk) if hasattr(f, "read1") else f.read(chunk)
            if not data:
                return
            yield data


def cmd_ingest_live(args: argparse.Namespace) -> int:
    """`moments ingest - --live --id cam-7`: stream standard input (or a file/FIFO) as a live video; Ctrl-C ends
    the stream cleanly (what was sent is committed and the video is complete)."""
    if len(args.paths) != 1 or not args.id:
        err.print("[red]error:[/red] --live takes one source ('-' for standard input) and --id VIDEO_ID")
        return EXIT_USAGE
    stop = threading.Event()
    started = time.monotonic()
    done = None
    with client_of(args) as client:
        events = client.ingest_events(
            _stdin_or_file(args.paths[0], stop),
            args.id,
            parse_meta(args.meta),
            fps=args.fps,
            live=True,
            segment_s=args.segment_s,
            replace=args.replace,
            thumbnails=args.thumbnails,
            filename=args.paths[0] if args.paths[0] != "-" else "stdin",
        )
        try:
            while True:
                try:
                    event = next(events)
                except StopIteration:
                    break
                except KeyboardInterrupt:
                    stop.set()  # the sender ends the stream at its next chunk; the server completes the video
                    err.print("[yellow]ending the stream...[/yellow]")
                    continue
                if isinstance(event, IngestCommitted) and not args.quiet:
                    lag = max(time.monotonic() - started - event.media_s, 0.0)
                    err.print(
                        f"committed {event.media_s:7.1f} s of video, {event.frames} frames, "
                        f"{fmt_bytes(event.bytes)}, {event.segments} segments (lag {lag:.1f} s)"
                    )
                elif isinstance(event, IngestDone):
                    done = event
        except MomentsError as e:
            err.print(f"[red]error:[/red] {e.code.name}: {escape(e.message)}")
            return EXIT_UNREACHABLE if e.code == grpc.StatusCode.UNAVAILABLE else EXIT_FAILED
    if done is not None:
        summary = {"video_id": args.id, "state": done.video.state, "frames": done.frames}
        summary["duration_s"] = done.video.duration_s
        print(json.dumps(summary) if args.json else f"{args.id}: {done.video.state}, {done.frames} frames")
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    from moments_client import cli_pull

    if any(cli_pull.is_url(p) for p in args.paths):
        return cli_pull.cmd_ingest_url(args)
    if args.live:
        return cmd_ingest_live(args)
    meta = parse_meta(args.meta)
    jobs = collect(args.paths, args.id_from)
    todo = [j for j in jobs if j.status == "pending"]
    for job in todo:  # an unreadable file fails here, with the OS's reason, before any upload starts
        try:
            with job.path.open("rb") as f:
                f.read(1)
            job.size = job.path.stat().st_size
        except OSError as e:
            job.status, job.reason = "failed", f"cannot read the file: {e.strerror or e}"
    todo = [j for j in jobs if j.status == "pending"]
    unreachable = threading.Event()
    cancelled = threading.Event()
    interrupted = False

    with client_of(args) as client:
        progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TextColumn("{task.fields[rate]}", justify="right"),
            TextColumn("{task.fields[stage]}"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
            disable=args.quiet or args.json,
        )
        total_bytes = sum(j.size or 0 for j in todo)
        with progress:
            overall = progress.add_task(
                f"[bold]total ({len(todo)} files)", total=total_bytes or None, stage="", rate=""
            )
            overall_started = time.monotonic()
            tasks: dict[str, TaskID] = {}
            for job in todo:
                # started when its upload starts, finished when the server is done (not when the last byte is sent)
                tasks[job.video_id] = progress.add_task(
                    escape(job.video_id), total=job.size or None, stage="queued", start=False, rate=""
                )
            lock = threading.Lock()
            sent_so_far: dict[str, int] = {}

            def run(job: Job) -> None:
                task = tasks[job.video_id]
                if unreachable.is_set() or cancelled.is_set():
                    why = "the server is unreachable" if unreachable.is_set() else "cancelled (Ctrl-C)"
                    job.status, job.reason = "failed", f"skipped: {why}"
                    progress.update(task, stage="[red]skipped")
                    return
                started = time.monotonic()
                progress.start_task(task)

                def on_event(event: IngestEvent) -> None:
                    if cancelled.is_set():
                        raise Cancelled
                    if isinstance(event, IngestAccepted):
                        stage = "replacing" if event.replacing else "uploading"
                        progress.update(task, stage=stage)
                    elif isinstance(event, IngestProgress):
                        received = max(event.bytes_received, 0)
                        with lock:
                            delta = received - sent_so_far.get(job.video_id, 0)
                            sent_so_far[job.video_id] = received
                            all_sent = sum(sent_so_far.values())
                        now = time.monotonic()
                        progress.update(
                            overall, advance=max(delta, 0), rate=upload_rate(all_sent, now - overall_started)
                        )
                        if delta > 0:  # the upload's rate; decoding and embedding after it do not dilute it
                            progress.update(task, rate=upload_rate(received, now - started))
                        stage = "uploading"
                        if event.frames_decoded or event.frames_embedded:
                            stage = f"{event.frames_embedded} frames embedded"
                        if event.frames_stored:
                            stage = f"{event.frames_stored} frames stored"
                        progress.update(task, completed=min(received, max((job.size or 0) - 1, 0)), stage=stage)
                    elif isinstance(event, IngestDone):
                        job.frames = event.frames
                        job.duration_s = event.video.duration_s

                try:
                    client.ingest(
                        job.path,
                        job.video_id,
                        meta,
                        fps=args.fps,
                        max_frames=args.max_frames,
                        keyframes=args.keyframes,
                        replace=args.replace,
                        thumbnails=args.thumbnails,
                        on_progress=on_event,
                    )
                    job.status = "ok"
                    progress.update(task, completed=job.size or 0, stage=f"[green]done, {job.frames} frames")
                except MomentsError as e:
                    job.status, job.reason = "failed", f"{e.code.name}: {e.message}"
                    if e.code == grpc.StatusCode.UNAVAILABLE:
                        unreachable.set()
                        job.reason = f"UNAVAILABLE: cannot reach the server at {args.target}: {e.message}"
                    progress.update(task, stage=f"[red]failed ({e.code.name})")
                except OSError as e:
                    job.status, job.reason = "failed", f"cannot read the file: {e.strerror or e}"
                    progress.update(task, stage="[red]failed (read error)")
                except Cancelled:
                    job.status, job.reason = "failed", "cancelled (Ctrl-C)"
                    progress.update(task, stage="[red]cancelled")
                except Exception as e:  # keep the other uploads going; report it in the summary
                    job.status, job.reason = "failed", f"{type(e).__name__}: {e}"
                    progress.update(task, stage="[red]failed")
                finally:
                    job.seconds = time.monotonic() - started
                    if job.status != "ok":
                        progress.stop_task(task)
                    with lock:
                        rest = (job.size or 0) - sent_so_far.get(job.video_id, 0)
                        sent_so_far[job.video_id] = job.size or 0
                    progress.update(overall, advance=max(rest, 0))

            pool = ThreadPoolExecutor(max_workers=max(1, args.parallel), thread_name_prefix="ingest")
            try:
                for future in [pool.submit(run, job) for job in todo]:
                    future.result()
            except KeyboardInterrupt:
                cancelled.set()
                err.print("interrupted: cancelling the uploads in flight")
                pool.shutdown(wait=True, cancel_futures=True)
                interrupted = True
            finally:
                pool.shutdown(wait=True)

    for job in jobs:
        if job.status == "pending":  # never started (Ctrl-C)
            job.status, job.reason = "failed", "skipped: cancelled (Ctrl-C)"
    failed = [j for j in jobs if j.status != "ok"]
    if args.json:
        print(
            json.dumps(
                {
                    "ingested": [
                        {
                            "path": str(j.path),
                            "video_id": j.video_id,
                            "frames": j.frames,
                            "duration_s": j.duration_s,
                            "seconds": round(j.seconds, 3),
                        }
                        for j in jobs
                        if j.status == "ok"
                    ],
                    "failed": [{"path": str(j.path), "video_id": j.video_id, "reason": j.reason} for j in failed],
                },
                indent=2,
            )
        )
    else:
        table = Table(title="ingest summary", title_justify="left")
        for col in ("file", "video_id", "status", "frames", "duration", "time", "reason"):
            table.add_column(col, overflow="fold", justify="right" if col in ("frames", "duration", "time") else "left")
        for j in jobs:
            ok = j.status == "ok"
            table.add_row(
                escape(str(j.path)),
                j.video_id,
                "[green]ok" if ok else "[red]failed",
                str(j.frames) if ok else "",
                f"{j.duration_s:.1f} s" if ok else "",
                f"{j.seconds:.2f} s" if j.seconds else "",
                escape(j.reason),
            )
        out.print(table)
        out.print(f"{len(jobs) - len(failed)} ingested, {len(failed)} failed")
    if failed:
        for j in failed:
            err.print(f"[red]failed[/red] {escape(str(j.path))}: {escape(j.reason)}")
        if interrupted:
            return 130
        if unreachable.is_set() and len(failed) == len(jobs):
            return EXIT_UNREACHABLE
        return EXIT_FAILED
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    if args.text is None and args.image is None and not args.any:
        raise UsageError("give a text to search for, --image FILE or --any TEXT")
    if args.image_weight is not None and (args.text is None or args.image is None):
        raise UsageError("--image-weight weighs --image against the text: give both")
    if args.max_per_video < 0:
        raise UsageError("--max-per-video is a count of moments (0 = no limit)")
    if args.image_weight is not None and not 0 < args.image_weight < 1:
        raise UsageError("--image-weight is the image's share of the query: between 0 and 1")
    image = None
    if args.image is not None:
        try:
            image = Path(args.image).read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read image {args.image}: {e.strerror or e}") from None
    where = parse_where(args.where)
    with client_of(args) as client:
        result = client.search(
            text=args.text,
            image=image,
            top_k=args.top_k,
            video_ids=args.video or None,
            start_s=args.start,
            end_s=args.end,
            where=where,
            merge_adjacent=args.merge,
            group_by_video=args.group,
            min_score=args.min_score,
            merge_tolerance=args.merge_tolerance,
            page_token=args.page_token,
            include_thumbnails=args.thumbnails is not None,
            complete_only=args.complete_only,
            image_weight=args.image_weight,
            any_texts=args.any,
            negative_texts=args.negative,
            max_per_video=args.max_per_video,
            relative_score=args.within,
        )
    if args.thumbnails is not None:
        folder = Path(args.thumbnails)
        folder.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(result, 1):
            if m.thumbnail_jpeg:
                (folder / f"{i:02d}-{m.video_id}-{m.best_frame_s:.1f}s.jpg").write_bytes(m.thumbnail_jpeg)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    terms = ([repr(args.text)] if args.text is not None else []) + ([f"image {args.image}"] if args.image else [])
    terms += [f"or {t!r}" for t in args.any] + [f"not {t!r}" for t in args.negative]
    query = " ".join(terms)
    table = Table(title=f"{len(result)} moments for {query}", title_justify="left")
    for col, justify in (
        ("#", "right"),
        ("video", "left"),
        ("from", "right"),
        ("to", "right"),
        ("best", "right"),
        ("score", "right"),
        ("metadata", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for i, m in enumerate(result, 1):
        table.add_row(
            str(i),
            m.video_id,
            f"{m.start_s:.1f} s",
            f"{m.end_s:.1f} s",
            f"{m.best_frame_s:.1f} s",
            f"{m.score:.3f}",
            fmt_meta(m.metadata),
        )
    out.print(table)
    if result.trimmed:
        out.print("fewer moments than asked: the page reached the server's response limit")
    if result.next_page_token:
        out.print(f"more: --page-token {result.next_page_token}")
    t = result.timing
    err.print(
        f"[dim]{t.total_ms:.1f} ms (queue {t.queue_ms:.1f}, inference {t.inference_ms:.1f}, "
        f"store {t.store_ms:.1f})[/dim]"
    )
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        info = client.info()
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return EXIT_OK
    table = Table(title=f"Moments at {args.target}", title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    m, lim = info.model, info.limits
    rows = [
        ("model", f"{m.name} ({m.pretrained})" if m.pretrained and m.pretrained != m.name else m.name),
        ("dimensions", str(m.dimensions)),
        ("image size", f"{m.image_size} px"),
        ("precision", m.precision),
        ("provider", m.provider),
        ("fingerprint", m.fingerprint),
        ("descriptor set", info.descriptor_set),
        ("store", info.store),
        ("max top_k", str(lim.max_top_k)),
        ("max upload", fmt_bytes(lim.max_upload_bytes)),
        ("max fps", f"{lim.max_fps:g}"),
        ("max frames", str(lim.max_frames)),
        ("batch (text/image)", f"{lim.text_max_batch}/{lim.image_max_batch}"),
    ]
    if lim.max_metadata_keys:  # servers before these limits do not report them
        rows += [
            (
                "metadata per video",
                f"{lim.max_metadata_keys} keys, {fmt_bytes(lim.max_metadata_value_bytes)} a value, "
                f"{fmt_bytes(lim.max_metadata_bytes)} in all",
            ),
            ("query text", f"{lim.max_query_chars} characters"),
            ("query image", f"{fmt_bytes(lim.max_image_bytes)}, {lim.max_image_pixels / 1e6:g} megapixels"),
            ("video", f"{lim.max_video_pixels / 1e6:g} megapixels, {lim.max_video_duration_s / 3600:g} h"),
            ("max response", fmt_bytes(lim.max_response_bytes)),
            ("concurrent ingests", str(lim.max_concurrent_ingests)),
        ]
    rows += [
        ("version", info.version),
    ]
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)
    return EXIT_OK


def cmd_videos_ls(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        videos = list(client.list_videos(page_size=args.page_size))
    if args.json:
        print(json.dumps([v.to_json() for v in videos], indent=2))
        return EXIT_OK
    table = Table(title=f"{len(videos)} videos", title_justify="left")
    for col in ("video_id", "file", "duration", "frames", "size", "video", "ingested", "metadata"):
        numeric = col in ("duration", "frames", "size")
        table.add_column(col, overflow="fold", justify="right" if numeric else "left", no_wrap=numeric)
    for v in videos:
        table.add_row(
            v.video_id,
            escape(v.filename),
            f"{v.duration_s:.1f} s",
            str(v.frames),
            fmt_bytes(v.size_bytes),
            f"{v.codec} {v.width}x{v.height}",
            fmt_time(v.ingested_at),
            escape(fmt_meta(v.metadata)),
        )
    out.print(table)
    return EXIT_OK


def cmd_videos_get(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        video = client.get_video(args.video_id)
    print(json.dumps(video.to_json(), indent=2))
    return EXIT_OK


def cmd_videos_rm(args: argparse.Namespace) -> int:
    code = EXIT_OK
    with client_of(args) as client:
        for vid in args.video_ids:
            try:
                frames = client.delete_video(vid)
                out.print(f"deleted {vid} ({frames} frames)")
            except MomentsError as e:
                if e.code == grpc.StatusCode.UNAVAILABLE:
                    raise
                err.print(f"[red]error:[/red] {vid}: {e.code.name}: {escape(e.message)}")
                code = EXIT_FAILED
    return code


def cmd_embed(args: argparse.Namespace) -> int:
    images: list[bytes] = []
    for path in args.image:
        try:
            images.append(Path(path).read_bytes())
        except OSError as e:
            raise UsageError(f"cannot read image {path}: {e.strerror or e}") from None
    with client_of(args) as client:
        result = client.embed(texts=args.texts or None, images=images or None)
    print(
        json.dumps(
            {
                "model": result.model,
                "dimensions": result.dimensions,
                "embeddings": [[round(float(x), 6) for x in row] for row in result.vectors],
            }
        )
    )
    return EXIT_OK


def parse_shapes(spec: str) -> list[tuple[str, str]]:
    from moments_shapes import COLORS, SHAPES

    shapes = []
    for item in spec.split(","):
        color, sep, shape = item.strip().partition(":")
        if not sep or color not in COLORS or shape not in SHAPES:
            raise UsageError(
                f"--shapes {item!r}: expected color:shape with a color in {', '.join(COLORS)} and a "
                f"shape in {', '.join(SHAPES)}"
            )
        shapes.append((color, shape))
    return shapes


def cmd_sample_video(args: argparse.Namespace) -> int:
    try:
        from moments_client.sample_video import CODECS, write_shapes_video
    except ImportError as e:  # pragma: no cover - numpy/PIL are dependencies
        raise UsageError(f"sample-video needs numpy and pillow: {e}") from None
    try:
        import av  # noqa: F401
    except ImportError:
        raise UsageError("sample-video needs PyAV: pip install 'moments-client[video]'") from None
    if args.codec not in CODECS:
        raise UsageError(f"--codec must be one of {', '.join(CODECS)}")
    w, _, h = args.size.lower().partition("x")
    try:
        size = (int(w), int(h or w))
    except ValueError:
        raise UsageError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 256x256") from None
    shapes = parse_shapes(args.shapes)
    path = Path(args.output)
    if path.parent and not path.parent.exists():
        raise UsageError(f"folder {path.parent} does not exist")
    schedule = write_shapes_video(
        path, shapes, seconds_each=args.seconds, fps=args.fps, size=size, codec=args.codec, seed=args.seed
    )
    if args.json:
        print(
            json.dumps(
                [
                    {"start_s": s.start_s, "end_s": s.end_s, "color": s.color, "shape": s.shape, "caption": s.caption}
                    for s in schedule
                ],
                indent=2,
            )
        )
        return EXIT_OK
    table = Table(title=f"{path} ({schedule[-1].end_s:g} s, {size[0]}x{size[1]}, {args.codec})", title_justify="left")
    for col in ("from", "to", "on screen"):
        table.add_column(col, justify="left" if col == "on screen" else "right")
    for s in schedule:
        table.add_row(f"{s.start_s:g} s", f"{s.end_s:g} s", s.caption)
    out.print(table)
    out.print(f'next: moments ingest {path}  &&  moments search "{schedule[0].caption}"')
    return EXIT_OK


# ----------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    def server_options(suppress: bool) -> argparse.ArgumentParser:
        # The subcommands take the same options (so `moments search --target X` works too); theirs default to
        # SUPPRESS so that they never overwrite a value given before the subcommand.
        p = argparse.ArgumentParser(add_help=False)
        g = p.add_argument_group("server")

        def default(value: Any) -> Any:
            return argparse.SUPPRESS if suppress else value

        g.add_argument(
            "--target",
            default=default(os.environ.get("MOMENTS_TARGET", DEFAULT_TARGET)),
            help=f"host:port of the server, or several comma-separated (balanced round-robin) (env MOMENTS_TARGET; "
            f"default {DEFAULT_TARGET})",
        )
        g.add_argument(
            "--token",
            default=default(os.environ.get("MOMENTS_TOKEN")),
            help="bearer token, sent as 'authorization: Bearer <token>' (env MOMENTS_TOKEN)",
        )
        g.add_argument(
            "--timeout",
            type=float,
            default=default(float(os.environ.get("MOMENTS_TIMEOUT", 30))),
            help="deadline of each call in seconds, ingest excepted (env MOMENTS_TIMEOUT; default 30)",
        )
        g.add_argument(
            "--tls", action="store_true", default=default(False), help="use TLS with the system's root certificates"
        )
        g.add_argument(
            "--ca-cert",
            metavar="PEM",
            default=default(os.environ.get("MOMENTS_CA_CERT")),
            help="use TLS with this CA bundle (env MOMENTS_CA_CERT)",
        )
        g.add_argument(
            "--client-cert",
            metavar="PEM",
            default=default(os.environ.get("MOMENTS_CLIENT_CERT")),
            help="client certificate for servers that require one (mTLS; env MOMENTS_CLIENT_CERT)",
        )
        g.add_argument(
            "--client-key",
            metavar="PEM",
            default=default(os.environ.get("MOMENTS_CLIENT_KEY")),
            help="its private key (env MOMENTS_CLIENT_KEY)",
        )
        return p

    common = server_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="moments",
        parents=[server_options(suppress=False)],
        description="Find the moments in a video library that match a sentence or a picture.",
        epilog="exit codes: 0 ok, 1 the server refused or some files failed, 2 usage or unreadable local file, "
        "3 server unreachable",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "ingest", parents=[common], help="upload videos (files or folders, recursive), or have the server pull a URL"
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="video files, or folders searched recursively; or one rtsp://, rtsps://, http(s):// (HLS) or udp:// "
        "URL that the server pulls as a live video (needs --id; Ctrl-C or `moments stop ID` ends it cleanly)",
    )
    p.add_argument("--parallel", "-j", type=int, default=2, help="concurrent upload streams (default %(default)s)")
    p.add_argument(
        "--id-from",
        choices=("name", "path"),
        default="name",
        help="video id from the file name (default) or its path under the folder given",
    )
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata for every video (repeatable); numbers, true/false, dates are typed",
    )
    p.add_argument("--replace", action="store_true", help="replace videos whose id exists")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second to sample (default %(default)s)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames per video (0 = no limit)")
    p.add_argument(
        "--keyframes",
        action="store_true",
        help="keep only keyframes (at most one per 1/fps window): far less decoding, frames as far apart as keyframes",
    )
    p.add_argument("--thumbnails", action="store_true", help="store a small JPEG per sampled frame")
    p.add_argument(
        "--live",
        action="store_true",
        help="stream one source that may never end ('-' = standard input, e.g. ffmpeg ... -f mpegts -), "
        "committed and searchable every --segment-s seconds of video; needs --id; Ctrl-C ends it cleanly",
    )
    p.add_argument("--id", help="the video id (--live, a URL)")
    p.add_argument(
        "--segment-s",
        type=float,
        default=0.0,
        help="--live, a URL: seconds of video per commit (0 = the server's default)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON (no progress bars)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_ingest)

    from moments_client import cli_pull

    cli_pull.add_stop_parser(sub, common)

    p = sub.add_parser("search", parents=[common], help="find moments matching a text or an image")
    p.add_argument("text", nargs="?", help="what to look for, e.g. 'a red circle'")
    p.add_argument("--image", metavar="FILE", help="search with a JPEG/PNG (with a text too: their weighted mix)")
    p.add_argument(
        "--image-weight",
        type=float,
        metavar="W",
        help="with a text and --image: the image's share of the query, 0..1 (default 0.5)",
    )
    p.add_argument(
        "--any", action="append", default=[], metavar="TEXT", help="or this text: a frame scores its best match"
    )
    p.add_argument(
        "--not",
        dest="negative",
        action="append",
        default=[],
        metavar="TEXT",
        help="push down frames that match this text (repeatable)",
    )
    p.add_argument("--max-per-video", type=int, default=0, metavar="N", help="at most N moments per video")
    p.add_argument("--within", type=float, metavar="D", help="only moments scoring within D of the best one")
    p.add_argument("--top-k", "-k", type=int, default=10, help="moments to return (default %(default)s)")
    p.add_argument("--video", action="append", default=[], metavar="ID", help="only this video (repeatable)")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COND",
        help="metadata condition (repeatable): key=value, key!=value, key>=value, key<value, 'key in a,b'",
    )
    p.add_argument("--start", type=float, help="only frames at or after this second")
    p.add_argument("--end", type=float, help="only frames at or before this second")
    p.add_argument("--complete-only", action="store_true", help="leave out live (and interrupted) streams")
    p.add_argument("--merge", action="store_true", help="merge adjacent hits of a video into one moment")
    p.add_argument(
        "--merge-tolerance",
        type=float,
        metavar="SCORE",
        help="with --merge: how far from a moment's best score a frame may score and still join it",
    )
    p.add_argument("--group", action="store_true", help="at most one moment per video")
    p.add_argument("--min-score", type=float, help="drop moments scoring below this")
    p.add_argument("--page-token", help="the next page of a previous search")
    p.add_argument(
        "--thumbnails",
        metavar="DIR",
        help="save each moment's best frame as a JPEG in DIR (videos ingested with --thumbnails)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("info", parents=[common], help="the serving model, store and limits")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("videos", parents=[common], help="list, show or delete stored videos")
    vsub = p.add_subparsers(dest="videos_command", required=True, metavar="ls|get|rm")
    q = vsub.add_parser("ls", parents=[common], help="list stored videos")
    q.add_argument("--json", action="store_true")
    q.add_argument("--page-size", type=int, default=100)
    q.set_defaults(func=cmd_videos_ls)
    q = vsub.add_parser("get", parents=[common], help="one video's record as JSON")
    q.add_argument("video_id")
    q.set_defaults(func=cmd_videos_get)
    q = vsub.add_parser("rm", parents=[common], help="delete videos with their frames")
    q.add_argument("video_ids", nargs="+", metavar="ID")
    q.set_defaults(func=cmd_videos_rm)

    p = sub.add_parser("embed", parents=[common], help="the model's vectors for texts or images, as JSON")
    p.add_argument("texts", nargs="*")
    p.add_argument("--image", action="append", default=[], metavar="FILE")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("sample-video", help="write a video of coloured shapes at known seconds (offline demo)")
    p.add_argument("output", metavar="OUT", help="e.g. demo.mp4")
    p.add_argument(
        "--shapes",
        default="red:circle,blue:square,green:triangle,yellow:cross",
        help="color:shape,... in order (default %(default)s)",
    )
    p.add_argument("--seconds", type=float, default=2.0, help="seconds each shape stays (default %(default)s)")
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--size", default="256x256", help="WIDTHxHEIGHT (default %(default)s)")
    p.add_argument("--codec", default="h264", help="h264, hevc, vp9, mpeg4 or mjpeg (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the schedule as JSON")
    p.set_defaults(func=cmd_sample_video)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return EXIT_USAGE
    except MomentsError as e:
        if e.code == grpc.StatusCode.UNAVAILABLE:
            err.print(
                f"[red]error:[/red] cannot reach the Moments server at {args.target}: {escape(e.message)}\n"
                "Is it running? Start one with `make serve`, or point --target (or MOMENTS_TARGET) at it."
            )
            return EXIT_UNREACHABLE
        if e.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            err.print(
                f"[red]error:[/red] the server at {args.target} did not answer within {args.timeout:g} s "
                f"({e.method}); raise --timeout or check the server"
            )
            return EXIT_UNREACHABLE
        if e.code == grpc.StatusCode.UNAUTHENTICATED:
            err.print(f"[red]error:[/red] {escape(e.message)} (give --token or MOMENTS_TOKEN)")
            return EXIT_FAILED
        err.print(f"[red]error:[/red] {e.method}: {e.code.name}: {escape(e.message)}")
        return EXIT_FAILED
    except ValueError as e:  # client-side validation (a video id, a filter)
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
