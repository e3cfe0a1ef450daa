"""What the history's parts share: reading rows in chunks, which images rows still use, and the
"not committed" answer of a retried write's check."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.history.models import Mask, Output, Source

# A retried write's `committed()` check returns this when the first attempt did not commit.
NOT_YET = object()


def chunks(items: Sequence[Any], n: int = 500) -> Iterator[Sequence[Any]]:
    """`items` in slices of at most `n` (an IN (...) list stays within the database's limits)."""
    for i in range(0, len(items), n):
        yield items[i:i + n]


def referenced(session: Session, digests: Sequence[str]) -> set[str]:
    """Which of `digests` a row of this database still uses."""
    found: set[str] = set()
    for chunk in chunks(list(digests)):
        for model in (Source, Mask, Output):
            found.update(session.scalars(select(model.hash).where(model.hash.in_(chunk))))
    return found
