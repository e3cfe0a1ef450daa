"""Slow work (image embedding, generation, model downloads) on a bounded thread pool, polled by
the page.

Why a thread: Streamlit reruns the script on every widget event. If generation ran in the script
thread, pressing Cancel would interrupt the script at its next `st.*` call and the job would die
half-way with no clean status. Here the job runs to completion or to a clean CancelledError (the
Cancel button only sets a threading.Event that core checks between diffusion steps), and a
`st.fragment(run_every=...)` redraws the progress bar from `Task.stage` / `Task.fraction`.
The worker never calls Streamlit.

Each kind of work has its own `concurrent.futures.ThreadPoolExecutor` (`POOL_SIZES` workers,
shared by every session), so a long download never holds up a generation; work beyond the bound
waits its turn. A `Task` is the `Future` plus what the page polls: progress, elapsed time and
the one-line error. One prepare and one generation at a time per session is the page's rule:
it starts a new one only when `running()` is false.

Tasks live in the server process, not in a page: a generation is also kept under its session id
(`keep`/`kept`), so a reloaded page gets its progress and Cancel back, and `find_run` gives
History the generation recording a given run.
"""
from __future__ import annotations

import atexit
import concurrent.futures as cf
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from concurrent.futures import ThreadPoolExecutor   # imports (and registers) the pool's exit hook
from typing import Any, Callable, Optional

from core.errors import BackdropError, CancelledError

log = logging.getLogger(__name__)

Work = Callable[[Callable[[str, float], None], threading.Event], Any]

POOL_SIZES = {"prepare": 4, "generate": 2, "download": 2}   # workers per kind, for all sessions
OUT_OF_MEMORY = "Out of memory: try a smaller photo, fewer variants or fewer steps."

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_live: "weakref.WeakSet[Task]" = weakref.WeakSet()
_live_lock = threading.Lock()
KEEP_DONE_S = 600.0        # a finished generation waits this long for its reloaded page
_kept: dict[str, "Task"] = {}
_kept_lock = threading.Lock()


@dataclass(eq=False)
class Task:
    """One piece of background work. Read by the page; `stage`/`fraction`/`finished` are written
    only by the worker."""

    kind: str                                   # "prepare" | "generate" | "download"
    label: str = ""                             # "generating the background": for the error line
    cancel: threading.Event = field(default_factory=threading.Event)
    stage: str = "starting"
    fraction: float = 0.0
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None
    future: Optional[cf.Future] = field(default=None, repr=False)
    run_id: Optional[int] = None                # the history run a generation records, once started
    run_history: Optional[str] = None           # ... in this history database (its URL)

    @property
    def done(self) -> bool:
        return self.future is not None and self.future.done()

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def result(self) -> Any:
        """What the work returned; None until it finished, or when it failed."""
        if not self.done or self.future.exception() is not None:
            return None
        return self.future.result()

    @property
    def cancelled(self) -> bool:
        return self.done and isinstance(self.future.exception(), CancelledError)

    @property
    def error(self) -> Optional[str]:
        """One line for the page when the work failed or was cancelled, else None."""
        exc = self.future.exception() if self.done else None
        if exc is None:
            return None
        if isinstance(exc, CancelledError):
            return str(exc) or "Cancelled."
        if isinstance(exc, BackdropError):
            return str(exc)
        if isinstance(exc, MemoryError):
            return OUT_OF_MEMORY
        return f"Something went wrong while {self.label or self.kind} ({type(exc).__name__}); see the server log."

    def progress(self, stage: str, fraction: float) -> None:
        self.stage = stage
        self.fraction = min(max(float(fraction), 0.0), 1.0)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the work has finished or `timeout` seconds passed; True when finished."""
        if self.future is not None:
            cf.wait([self.future], timeout)
        return self.done


def _pool(kind: str) -> ThreadPoolExecutor:
    with _pools_lock:
        if kind not in _pools:
            _pools[kind] = ThreadPoolExecutor(max_workers=POOL_SIZES.get(kind, 2),
                                                 thread_name_prefix=f"backdrop-{kind}")
        return _pools[kind]


def start(kind: str, work: Work, *, label: str = "") -> Task:
    """Submit `work(progress, cancel)` to the pool for `kind` and return its Task at once."""
    return submit(Task(kind=kind, label=label), work)


def submit(task: Task, work: Work) -> Task:
    """Run `work(progress, cancel)` for `task` (made by the caller, so the work can refer to it)."""
    kind = task.kind

    def run() -> Any:
        try:
            return work(task.progress, task.cancel)
        except BaseException as e:
            _log_failure(task, e)
            # the Future keeps the exception: drop its traceback and chain, whose frames would
            # pin the job's arrays (and GPU tensors) for as long as the Task sits in session state
            e.__traceback__ = e.__cause__ = e.__context__ = None
            raise
        finally:
            task.finished = time.monotonic()

    task.future = _pool(kind).submit(run)
    with _live_lock:
        _live.add(task)
    return task


def _drop_old_kept() -> None:
    now = time.monotonic()
    for owner, task in list(_kept.items()):
        if task.finished is not None and now - task.finished > KEEP_DONE_S:
            del _kept[owner]


def keep(owner: str, task: Task) -> None:
    """Remember `task` as the latest generation of `owner` (a session id), so that a reload of that
    page finds it again: while it runs, and for KEEP_DONE_S after (its result)."""
    with _kept_lock:
        _drop_old_kept()
        _kept[owner] = task


def kept(owner: str) -> Optional[Task]:
    """The generation last kept for `owner`, unless it finished more than KEEP_DONE_S ago."""
    with _kept_lock:
        _drop_old_kept()
        return _kept.get(owner)


def find_run(run_id: int, history: str) -> Optional[Task]:
    """The generation of this server process that records run `run_id` of the history database
    `history` (its URL: run ids are per database), if any."""
    with _live_lock:
        live = list(_live)
    return next((t for t in live if t.kind == "generate" and t.run_id == run_id
                 and t.run_history == history), None)


def _log_failure(task: Task, e: BaseException) -> None:
    if isinstance(e, CancelledError):
        log.info("%s cancelled: %s", task.kind, e)
    elif isinstance(e, BackdropError):       # expected: bad input, missing weights, full disk
        log.info("%s failed: %s", task.kind, e)
    elif isinstance(e, MemoryError):
        log.warning("%s ran out of memory", task.kind, exc_info=True)
    else:
        log.exception("%s failed", task.label or task.kind)


def running(task: Optional[Task]) -> bool:
    return task is not None and not task.done


def _cancel_all() -> None:
    """At interpreter exit, before the pools join their threads: ask every live task to stop, so
    shutting the server down does not wait for a 100-step generation."""
    with _live_lock:
        live = list(_live)
    for task in live:
        task.cancel.set()


# threading's exit hooks run in reverse order of registration, so this runs before the one
# concurrent.futures.thread registered when ThreadPoolExecutor was imported (it joins the workers).
# The hook is private CPython API (3.9+); without it, `atexit` runs too late to shorten the wait,
# but a task still ends at its next cancel check once the interpreter's teardown reaches it.
_register_early = getattr(threading, "_register_atexit", None) or atexit.register
_register_early(_cancel_all)
