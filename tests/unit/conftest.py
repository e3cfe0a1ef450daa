"""The unit tier stays quick and self-contained: a test here that starts a process or imports Ray
fails, naming what it did (such a test belongs in tests/integration). Its PostgreSQL and S3 cases
(the `history_url` / `s3_url` parametrisations) are integration work kept next to their SQLite twin;
`bash scripts/test.sh --quick` leaves them out."""
from __future__ import annotations

import subprocess
import sys

import pytest

OUTSIDE = {"postgres", "s3", "service"}


class TierError(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _unit_tier_guard(request, monkeypatch):
    if OUTSIDE & {m.name for m in request.node.iter_markers()}:
        yield
        return

    def refuse(*args, **kwargs):
        raise TierError(f"a unit test started a process ({args[0] if args else kwargs.get('args')!r}): "
                        "move it to tests/integration")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    had_ray = "ray" in sys.modules
    yield
    if not had_ray and "ray" in sys.modules:
        raise TierError("a unit test imported ray: move it to tests/integration")
