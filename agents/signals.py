"""Signal handling of a training session: SIGINT and SIGTERM become one interrupt that saves, and saving itself cannot be interrupted."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator


class _Interrupted(KeyboardInterrupt):
    """Raised from the signal handler of :func:`interruptible`, so SIGTERM takes the same path as Ctrl-C."""


@contextmanager
def interruptible() -> Iterator[dict[str, int]]:
    """
    Turn SIGINT and SIGTERM into a KeyboardInterrupt for the duration and record which signal
    arrived, so the run can exit with 128 + signal number. SIGINT is installed explicitly: a shell
    starts background jobs (``cmd &``) with SIGINT ignored, and a run started that way, or by a
    ``compare`` started that way, must still save its checkpoint when ``compare`` forwards Ctrl-C.

    :return: a dict whose ``signal`` entry is set when a signal arrived
    """
    received: dict[str, int] = {}

    def handler(signum: int, frame: Any) -> None:
        received["signal"] = signum
        raise _Interrupted()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)} if _is_main_thread() else {}
    try:
        yield received
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while saving, so a second Ctrl-C cannot leave half-written files."""
    if not _is_main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _is_main_thread() -> bool:
    # Python lets only the main thread install handlers (a Ray worker thread, for one, cannot).
    return threading.current_thread() is threading.main_thread()
