"""Which database a history is, so that a copy never deletes the original's images.

A database's store id (store_info "store_id") names its claims in the image store
(refs/<store id>/…, core/history/blobs/), and it must belong to ONE database: two databases with
one id delete each other's images. A copy (cp, a backup restored, CREATE DATABASE … TEMPLATE,
pg_dump + restore, a file taken to another machine) carries the id along, so a database also
records the fingerprints it has been opened as (store_info "fingerprints", JSON):

    SQLite       sqlite:<machine>:<st_dev>:<st_ino>   the file itself: the same through a rename,
                 a hard link, a symlink or a bind mount; another for a copy, a restore, a file
                 moved to another filesystem or machine
    PostgreSQL   postgresql:<system identifier>:<database oid>   the same from every client and
                 after ALTER DATABASE … RENAME; another for a TEMPLATE copy or a restored dump
    other        url:<the URL without its password>
    in memory    none (a new database each time)

Opening keeps the id only when the fingerprint is one the database recorded. Anything else is doubt
(a copy, a move to another filesystem or machine, a database from before fingerprints, the same
file through an NFS mount whose device number differs): the database takes a new id and claims all
its images under it before it can delete anything. That costs space (the old id's claims stay until
its own database releases them, or `python -m core history store forget`), never an image.

Each id's marker, refs/<id>/.store, says where its database was last opened (password hidden), so
`history store` can list ids with their last use and check whether their database still exists.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.pool import NullPool

from core.errors import InvalidOptionError
from core.files import HOST
from core.history import db
from core.history.blobs import BlobStore
from core.history.models import StoreInfo
from core.settings import settings

FINGERPRINTS = "fingerprints"
MAX_FINGERPRINTS = 16


def machine() -> str:
    """This machine: BACKDROP_MACHINE_ID where set (a container whose host name changes at each
    start), else its host name plus the start of /etc/machine-id where there is one (a cloned VM
    keeps the host name but gets a new machine id)."""
    named = re.sub(r"[^A-Za-z0-9_.-]", "_", settings().machine_id)[:64]
    if named:
        return f"id/{named}"
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                mid = f.read().strip()
        except OSError:
            continue
        if mid:
            return f"{HOST}/{mid[:12]}"
    return HOST


@dataclass(frozen=True)
class Fingerprint:
    key: str                         # what is compared
    where: str = ""                  # for people: the file's path, or the URL without password
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {"fp": self.key, "where": self.where, **self.extra}


def sqlite_path(url) -> Optional[str]:
    """The real path of an SQLite database file, None for an in-memory one."""
    if db.sqlite_memory(url):
        return None
    name = url.database
    if str(url.query.get("uri", "")).lower() in ("true", "1") and name.startswith("file:"):
        name = urllib.parse.unquote(urllib.parse.urlsplit(name).path)
    return os.path.realpath(os.path.expanduser(name))


def fingerprint(engine: Engine) -> Optional[Fingerprint]:
    """What this database is (see the module docstring); None for an in-memory SQLite database."""
    url = engine.url
    if db.is_sqlite(engine):
        path = sqlite_path(url)
        if path is None:
            return None
        st = os.stat(path)
        return Fingerprint(f"sqlite:{machine()}:{st.st_dev}:{st.st_ino}", path,
                           {"machine": machine(), "path": path})
    shown = db.shown(url)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            oid = conn.execute(text("SELECT oid FROM pg_database "
                                    "WHERE datname = current_database()")).scalar()
            try:
                sysid = conn.execute(text("SELECT system_identifier FROM pg_control_system()")).scalar()
            except Exception:                      # not allowed, or not real PostgreSQL
                conn.rollback()
                sysid = f"server:{url.host}:{url.port or 5432}"
        return Fingerprint(f"postgresql:{sysid}:{oid}", shown, {"sysid": str(sysid), "oid": int(oid)})
    return Fingerprint(f"url:{shown}", shown)


def load(value: Optional[str]) -> Optional[list[dict]]:
    """The recorded fingerprints; None when the database has none (from before fingerprints)."""
    if value is None:
        return None
    try:
        items = json.loads(value)
    except ValueError:
        return []
    return [i for i in items if isinstance(i, dict) and isinstance(i.get("fp"), str)] \
        if isinstance(items, list) else []


def known(me: Fingerprint, recorded: Optional[list[dict]]) -> bool:
    return any(r["fp"] == me.key for r in recorded or ())


def merged(me: Fingerprint, recorded: Optional[list[dict]]) -> dict:
    """`me` as recorded, with every path the same file was opened through (SQLite: a hard link,
    a rename, a bind mount), so `history store` can look for it at each."""
    entry = me.record()
    old = next((r for r in recorded or () if r["fp"] == me.key), None)
    if old is not None and "path" in entry:
        paths = [p for p in old.get("paths") or [old.get("path")] if isinstance(p, str)]
        entry["paths"] = list(dict.fromkeys([*paths, entry["path"]]))[-8:]
    elif "path" in entry:
        entry["paths"] = [entry["path"]]
    return entry


def new_path(me: Fingerprint, recorded: Optional[list[dict]]) -> bool:
    """Whether `me` (known) was opened through a path not recorded for it yet."""
    return "path" in me.extra and merged(me, recorded) != next(
        (r for r in recorded or () if r["fp"] == me.key), None)


def dump(recorded: list[dict], me: Optional[Fingerprint]) -> str:
    items = [r for r in recorded if me is None or r["fp"] != me.key]
    if me is not None:
        items.append(merged(me, recorded))
    return json.dumps(items[-MAX_FINGERPRINTS:], sort_keys=True)


def marker(store_id: str, me: Optional[Fingerprint], replaces: Optional[str] = None,
           recorded: Optional[list[dict]] = None) -> dict:
    info = {"store_id": store_id, "machine": machine(),
            "opened": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if me is not None:
        info.update(merged(me, recorded))
        info["fingerprint"] = info.pop("fp")
    if replaces:
        info["replaces"] = replaces
    return info


# ---------------------------------------------------------------------- listing, forgetting --
@dataclass(frozen=True)
class StoreEntry:
    store_id: str
    claims: int
    last_used: Optional[float]       # time.time() of the newest claim or marker
    state: str                       # this database | in use | recently used | not found | cannot check
    detail: str


def _sqlite_store_id(path: str) -> Optional[str]:
    con = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT value FROM store_info WHERE key = 'store_id'").fetchone()
    finally:
        con.close()
    return row[0] if row else None


def _where_now(store, sid: str, info: Optional[dict]) -> tuple[str, str]:
    """(state, detail) of the database that last used store id `sid`, from its marker."""
    if info is None:
        return "cannot check", "no record of its database (its claims were made by an older Backdrop)"
    fp, where = str(info.get("fingerprint", "")), str(info.get("where", "?"))
    if fp.startswith("sqlite:"):
        if info.get("machine") != machine():
            return "cannot check", f"its database is on another machine ({info.get('machine')}): {where}"
        paths = [p for p in info.get("paths") or [info.get("path") or where] if isinstance(p, str)]
        others = []
        for path in paths:
            if not os.path.exists(path):
                continue
            try:
                found = _sqlite_store_id(path)
            except sqlite3.Error as e:
                return "cannot check", f"{path} cannot be read ({e})"
            if found == sid:
                return "in use", path
            others.append(f"{path} now holds another database" + (f" ({found})" if found else ""))
        if others:
            return "not found", "; ".join(others)
        return "not found", " and ".join(paths) + " no longer exist" + ("s" if len(paths) == 1 else "")
    if fp.startswith("postgresql:") and store.engine.dialect.name == "postgresql":
        mine = fingerprint(store.engine)
        if mine is None or mine.extra.get("sysid") != info.get("sysid"):
            return "cannot check", f"its database is on another PostgreSQL server: {where}"
        with store.engine.connect() as conn:
            name = conn.execute(text("SELECT datname FROM pg_database WHERE oid = :oid"),
                                {"oid": int(info.get("oid", 0))}).scalar()
        if name is None:
            return "not found", f"{where} was dropped"
        other = create_engine(store.engine.url.set(database=name), poolclass=NullPool,
                              connect_args={"connect_timeout": 10})
        try:
            with other.connect() as conn:
                found = conn.execute(text("SELECT value FROM store_info WHERE key = 'store_id'")).scalar()
        except Exception as e:
            return "cannot check", f"cannot open database {name!r}: " + \
                (str(getattr(e, "orig", e)).splitlines() or [type(e).__name__])[0]
        finally:
            other.dispose()
        if found == sid:
            return "in use", db.shown(other.url)
        return "not found", f"database {name!r} now holds another history"
    return "cannot check", f"its database cannot be reached from here: {where}"


def list_stores(store, grace_s: float) -> list[StoreEntry]:
    """Every store id with claims in `store`'s image store: this database's first, then the
    others by last use, newest first."""
    with store._errors():
        owners = store.blobs.owners()
        owners.setdefault(store.store_id, {"claims": 0, "last_used": 0.0, "marker": False})
        markers = {sid: store.blobs.read_marker(sid) if o["marker"] else None
                   for sid, o in owners.items()}
        took_over = {str(m["replaces"]): sid for sid, m in markers.items() if m and m.get("replaces")}
        entries = []
        for sid, o in owners.items():
            info = markers[sid]
            last = o["last_used"] or None
            if sid == store.store_id:
                state, detail = "this database", (info or {}).get("where") or db.shown(store.engine.url)
            else:
                state, detail = _where_now(store, sid, info)
                if sid in took_over:
                    heir = took_over[sid]
                    detail += (f"; store {heir}" + (" (this database)" if heir == store.store_id else "")
                               + " took over from it")
                if state != "in use" and last is not None and time.time() - last < grace_s:
                    state, detail = "recently used", f"used {time.time() - last:.0f} s ago; {detail}"
            entries.append(StoreEntry(sid, o["claims"], last, state, detail))
    entries.sort(key=lambda e: (e.store_id != store.store_id, -(e.last_used or 0)))
    return entries


@dataclass(frozen=True)
class Forgotten:
    store_id: str
    claims: int
    removed_files: int
    removed_bytes: int


def forget_store(store, sid: str, *, force: bool, grace_s: float) -> Forgotten:
    """Release every claim of store id `sid` and delete the images no other store id claims. Refused
    (InvalidOptionError) for this database's own id, an id whose database is still there, one used
    within `grace_s`, and, unless `force`, one whose database cannot be checked from here."""
    from core.history.shared import referenced

    sid = sid.strip().lower()
    if len(sid) != 32 or any(c not in "0123456789abcdef" for c in sid):
        raise InvalidOptionError(f"{sid[:40]!r} is not a store id (32 hex digits, as `history store` "
                                 "lists them)")
    entry = next((e for e in list_stores(store, grace_s) if e.store_id == sid), None)
    if entry is None:
        raise InvalidOptionError(f"no store id {sid} in the image store {store.blobs.location}")
    if entry.state == "this database":
        raise InvalidOptionError(f"{sid} is this database's own store id: delete runs instead")
    if entry.state == "in use":
        raise InvalidOptionError(f"store {sid} is still in use by {entry.detail}: nothing released")
    if entry.state == "recently used":
        raise InvalidOptionError(f"store {sid} was {entry.detail.split(';')[0]}: something may "
                                 f"still be writing with it; try again after {grace_s:.0f} s "
                                 "without use (BACKDROP_SWEEP_GRACE_S)")
    if entry.state == "cannot check" and not force:
        raise InvalidOptionError(f"cannot check that the database of store {sid} is gone "
                                 f"({entry.detail}); if you are sure it is, and that no copy of it "
                                 "will be opened again, rerun with --force")
    other = BlobStore(store.blobs.backend, sid)
    with store._errors():
        digests = sorted(d for d, _ in other.claims())
        with store._read() as session:
            ours = referenced(session, digests)
        store.blobs.claim(sorted(ours))      # this database's images stay, whatever it claimed
        removed, freed = other.release(digests)
        other.drop_claims()
    return Forgotten(sid, len(digests), removed, freed)


def read_info(session) -> dict[str, str]:
    return {r.key: r.value for r in session.scalars(select(StoreInfo))}
