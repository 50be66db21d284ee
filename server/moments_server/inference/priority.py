"""Lower OS scheduling priority (a higher nice value) for the threads that do ingest inference.

On a CPU host both towers share the cores. An ingest batch that is already running when a query arrives cannot
be stopped, so the query's text tower runs beside it and both take twice as long (bench figure 4: search p99
under a backfill 2.8x idle with the trimmed text tower). With the image tower's threads at a higher nice value
the kernel gives a query's threads the cores first and ingest every cycle they leave, without holding ingest
back. Linux sets nice per thread (setpriority on a thread id), and threads inherit it from the thread that
creates them: onnxruntime's intra-op pool is created with its session, so a session built in a lowered thread
runs all its work there. Raising nice needs no privilege; lowering it back would, so only threads that do
nothing else are lowered.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def lower_this_thread(nice: int) -> None:
    """Add `nice` to the calling thread's nice value (Linux; elsewhere a logged no-op)."""
    if nice <= 0:
        return
    if not sys.platform.startswith("linux"):
        log.info("thread priorities are left as they are on %s", sys.platform)
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as e:
        log.warning("could not lower the priority of thread %s: %s", threading.current_thread().name, e)


def thread_nice() -> int:
    """The calling thread's nice value (Linux); 0 elsewhere."""
    if not sys.platform.startswith("linux"):
        return 0
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def in_lowered_thread(nice: int, fn: Callable[[], T]) -> T:
    """fn() in a new thread whose nice value is raised by `nice` first: what fn creates (onnxruntime's
    thread pool) inherits it. Returns fn's result or raises its exception."""
    if nice <= 0:
        return fn()
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        lower_this_thread(nice)
        try:
            out.append(fn())
        except BaseException as e:  # re-raised in the caller
            err.append(e)

    t = threading.Thread(target=run, name="lowered-priority")
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]
