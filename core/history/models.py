"""SQLAlchemy 2.0 ORM models of the history (the schema at the newest Alembic revision).

Schema changes go through a new file in `migrations/versions/`; these classes describe the head.
Times are stored as naive UTC datetimes (SQLite has no time zones); the store hands out aware ones.
Paths are stored relative to the data dir (e.g. "images/ab/abcdef….png"), never absolute.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        String, Text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

RUN_STATUSES = ("running", "succeeded", "failed", "cancelled")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime()}


class Source(Base):
    """An input photo, stored once per content hash however many runs use it."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)       # core.images.content_hash
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(255))                    # PNG, relative to data dir
    thumb_path: Mapped[str] = mapped_column(String(255))              # WebP, long side 256
    created: Mapped[datetime]


class Mask(Base):
    """A full-size subject mask (L, 255 = subject), content-addressed like sources."""

    __tablename__ = "masks"

    id: Mapped[int] = mapped_column(primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime]


class Run(Base):
    """One background replacement: its run spec, status, timings, mask and outputs."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    created: Mapped[datetime] = mapped_column(index=True)             # start time, UTC
    finished: Mapped[Optional[datetime]]
    status: Mapped[str] = mapped_column(String(16), index=True)       # RUN_STATUSES
    owner: Mapped[str] = mapped_column(String(160), default="")       # "host:pid" while running
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="RESTRICT"), index=True)
    source_name: Mapped[str] = mapped_column(Text, default="")        # display only
    # revision 0004: every parameter of the run, as core.spec.RunSpec.to_json() (with "version")
    spec: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    # indexed columns derived from the spec (RunSpec.index_columns) for search and filters
    background_kind: Mapped[str] = mapped_column(String(16), index=True)
    model: Mapped[Optional[str]] = mapped_column(Text, index=True)
    timings: Mapped[dict[str, Any]]                                   # stage -> seconds
    device: Mapped[Optional[str]] = mapped_column(String(64))
    error: Mapped[Optional[str]] = mapped_column(Text)
    duration: Mapped[Optional[float]] = mapped_column(Float)          # seconds
    mask_id: Mapped[Optional[int]] = mapped_column(ForeignKey("masks.id", ondelete="RESTRICT"),
                                                   index=True)
    # revision 0002: casefolded prompt + "\n" + negative, for case-insensitive search beyond ASCII
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    # revision 0005: the batch the run was part of (set by core.batch runs only), for filters
    batch: Mapped[Optional[str]] = mapped_column(Text, index=True)

    source: Mapped[Source] = relationship(lazy="joined", innerjoin=True)
    mask: Mapped[Optional[Mask]] = relationship(lazy="joined")
    outputs: Mapped[list["Output"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Output.index", lazy="selectin")

    __table_args__ = (Index("ix_runs_created_id", "created", "id"),)   # revision 0002


class Output(Base):
    """One variant image of a run (full size PNG + WebP thumbnail)."""

    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)                       # 0-based variant number
    seed: Mapped[Optional[int]] = mapped_column(BigInteger)
    favorite: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    hash: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(String(255))
    thumb_path: Mapped[str] = mapped_column(String(255))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)

    run: Mapped[Run] = relationship(back_populates="outputs")


class StoreInfo(Base):
    """Facts about this database as a whole (revision 0003): "store_id" (whose refs/ folder in the
    data dir claims its image files) and "location" (where it was opened, to notice a copy)."""

    __tablename__ = "store_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
