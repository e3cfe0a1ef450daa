"""Slow work (image embedding, generation) in a background thread, polled by the page.

Why a thread: Streamlit reruns the script on every widget event. If generation ran in the script
thread, pressing Cancel would interrupt the script at its next `st.*` call and the job would die
half-way with no clean status. Here the job runs to completion or to a clean CancelledError (the
Cancel button only sets a threading.Event that core checks between diffusion steps), and a
`st.fragment(run_every=...)` redraws the progress bar from `Task.stage` / `Task.fraction`.
The thread never calls Streamlit.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from core.errors import BackdropError, CancelledError

log = logging.getLogger("backdrop.ui")

Work = Callable[[Callable[[str, float], None], threading.Event], Any]


@dataclass
class Task:
    """One piece of background work. Read by the page; written only by the worker thread."""

    kind: str                                   # "prepare" | "generate"
    label: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    stage: str = "starting"
    fraction: float = 0.0
    result: Any = None
    error: Optional[str] = None                 # one line for the page
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None
    thread: Optional[threading.Thread] = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def progress(self, stage: str, fraction: float) -> None:
        self.stage = stage
        self.fraction = min(max(float(fraction), 0.0), 1.0)

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.done


def start(kind: str, work: Work, *, label: str = "") -> Task:
    """Run `work(progress, cancel)` in a daemon thread and return its Task at once."""
    task = Task(kind=kind, label=label)

    def run() -> None:
        try:
            task.result = work(task.progress, task.cancel)
        except CancelledError as e:
            task.cancelled = True
            task.error = str(e) or "Cancelled."
        except BackdropError as e:
            task.error = str(e)
        except MemoryError:
            task.error = "Out of memory: try a smaller photo, fewer variants or fewer steps."
        except Exception as e:  # never a traceback in the page; the server log keeps the details
            log.exception("%s failed", kind)
            task.error = f"Something went wrong while {label or kind} ({type(e).__name__}); see the server log."
        finally:
            task.finished = time.monotonic()

    task.thread = threading.Thread(target=run, name=f"backdrop-{kind}", daemon=True)
    task.thread.start()
    return task


def running(task: Optional[Task]) -> bool:
    return task is not None and not task.done
