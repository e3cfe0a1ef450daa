"""One polling helper for every tier: wait for something another thread, process or server does."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(cond: Callable[[], T], timeout: float = 60.0, what: str = "the condition",
               poll: float = 0.05) -> T:
    """Call cond() until it returns something truthy and return that; after `timeout` seconds fail
    with "timed out after N s waiting for <what>". An exception from cond() propagates at once."""
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
