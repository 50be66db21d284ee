"""The uploads of `moments ingest`: `--parallel` streams at once, a progress bar per file and one for the total.

A file's bar starts when its upload starts and finishes when the server is done with it (not when its last byte
is sent). Ctrl-C cancels the uploads in flight at their next event (the server keeps nothing of them) and skips
the rest; once the server is found unreachable, the files not yet started are skipped too.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from moments_client.cli.common import client_of, err, upload_rate
from moments_client.cli.jobs import Job
from moments_client.client import Client
from moments_client.errors import MomentsError
from moments_client.types import IngestAccepted, IngestDone, IngestEvent, IngestProgress, MetaValue


class Cancelled(Exception):
    """Ctrl-C: the uploads in flight stop at their next event (the server keeps nothing of them)."""


@dataclass
class Outcome:
    interrupted: bool  # Ctrl-C
    unreachable: bool  # some upload found the server unreachable


def upload(args: argparse.Namespace, meta: dict[str, MetaValue], todo: Sequence[Job]) -> Outcome:
    """Upload every job (each ends "ok" or "failed" with its reason, or stays "pending" if never started)."""
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
        with progress:
            uploads = Uploads(args, client, meta, progress, todo)
            pool = ThreadPoolExecutor(max_workers=max(1, args.parallel), thread_name_prefix="ingest")
            try:
                for future in [pool.submit(uploads.run, job) for job in todo]:
                    future.result()
            except KeyboardInterrupt:
                uploads.cancelled.set()
                err.print("interrupted: cancelling the uploads in flight")
                pool.shutdown(wait=True, cancel_futures=True)
                return Outcome(interrupted=True, unreachable=uploads.unreachable.is_set())
            finally:
                pool.shutdown(wait=True)
    return Outcome(interrupted=False, unreachable=uploads.unreachable.is_set())


class Uploads:
    """The shared state of one `moments ingest`'s uploads (each runs in a worker thread)."""

    def __init__(
        self,
        args: argparse.Namespace,
        client: Client,
        meta: dict[str, MetaValue],
        progress: Progress,
        todo: Sequence[Job],
    ) -> None:
        self.args, self.client, self.meta, self.progress = args, client, meta, progress
        self.unreachable = threading.Event()
        self.cancelled = threading.Event()
        self.lock = threading.Lock()
        self.sent_so_far: dict[str, int] = {}
        self.sent_total = 0  # sum(sent_so_far.values()), kept as the events come
        total_bytes = sum(j.size or 0 for j in todo)
        self.overall = progress.add_task(
            f"[bold]total ({len(todo)} files)", total=total_bytes or None, stage="", rate=""
        )
        self.overall_started = time.monotonic()
        self.tasks: dict[str, TaskID] = {
            job.video_id: progress.add_task(
                escape(job.video_id), total=job.size or None, stage="queued", start=False, rate=""
            )
            for job in todo
        }

    def run(self, job: Job) -> None:
        args, progress, task = self.args, self.progress, self.tasks[job.video_id]
        if self.unreachable.is_set() or self.cancelled.is_set():
            why = "the server is unreachable" if self.unreachable.is_set() else "cancelled (Ctrl-C)"
            job.status, job.reason = "failed", f"skipped: {why}"
            progress.update(task, stage="[red]skipped")
            return
        started = time.monotonic()
        progress.start_task(task)
        try:
            self.client.ingest(
                job.path,
                job.video_id,
                self.meta,
                fps=args.fps,
                max_frames=args.max_frames,
                keyframes=args.keyframes,
                replace=args.replace,
                thumbnails=args.thumbnails,
                on_progress=lambda event: self.on_event(job, task, started, event),
            )
            job.status = "ok"
            progress.update(task, completed=job.size or 0, stage=f"[green]done, {job.frames} frames")
        except MomentsError as e:
            job.status, job.reason = "failed", f"{e.code.name}: {e.message}"
            if e.code == grpc.StatusCode.UNAVAILABLE:
                self.unreachable.set()
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
            with self.lock:
                rest = (job.size or 0) - self.sent_so_far.get(job.video_id, 0)
                self.sent_so_far[job.video_id] = job.size or 0
                self.sent_total += rest
            progress.update(self.overall, advance=max(rest, 0))

    def on_event(self, job: Job, task: TaskID, started: float, event: IngestEvent) -> None:
        if self.cancelled.is_set():
            raise Cancelled
        progress = self.progress
        if isinstance(event, IngestAccepted):
            progress.update(task, stage="replacing" if event.replacing else "uploading")
        elif isinstance(event, IngestProgress):
            received = max(event.bytes_received, 0)
            with self.lock:
                delta = received - self.sent_so_far.get(job.video_id, 0)
                self.sent_so_far[job.video_id] = received
                self.sent_total += delta
                all_sent = self.sent_total
            now = time.monotonic()
            progress.update(self.overall, advance=max(delta, 0), rate=upload_rate(all_sent, now - self.overall_started))
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
