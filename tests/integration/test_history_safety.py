"""Issue 18, the history's share: copies of a history never delete the original's images, dead
store ids can be seen and released, a database URL's password is never shown, a hung S3 endpoint
fails in bounded time without holding the history's write lock, a process older than the database
says so, renames are durable, and the opening sweep reports what it did. One test per case; each
fails on the code before its fix. Real SQLite, a real PostgreSQL server, a real S3 server (moto)."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import traceback
import uuid
from pathlib import Path

import numpy as np
import pytest

from core.errors import HistoryError
from core.history import HistoryStore, db, open_store
from runs import record
from cli_kit import assert_one_line_error, run_cli as cli

ROOT = Path(__file__).resolve().parents[2]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    return assert_one_line_error(proc)


def picture(seed: int, shape=(24, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def run_files(store) -> list:
    """Every stored file the runs of `store` point at."""
    out = []
    for run in store.iter_runs():
        out += [run.source.path, run.source.thumb_path, *(o.path for o in run.outputs),
                *(o.thumb_path for o in run.outputs)] + ([run.mask.path] if run.mask else [])
    return out


def all_readable(store) -> None:
    missing = [str(p) for p in run_files(store) if not store.has_file(p)]
    assert not missing, missing


def close_sqlite(store) -> None:
    """Let go of an SQLite history (its WAL folded into the file), as a finished process does."""
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.forget(str(store.url))
    store.engine.dispose()


# ------------------------------------------------------------------- 3. copies of a history --
@pytest.mark.parametrize("how", ["sqlite mv+cp", "postgres TEMPLATE"])
def test_a_copy_of_a_history_gets_its_own_id_and_never_deletes_the_originals_images(
        how, tmp_path, request):
    data = tmp_path / "data"
    if how.startswith("sqlite"):
        first = f"sqlite:///{tmp_path / 'history.db'}"
    else:
        postgres = request.getfixturevalue("postgres")
        first = request.getfixturevalue("pg_url")
    orig = HistoryStore(first, data)
    rids = [record(orig, source=picture(i), mask=np.full((24, 32), 255, np.uint8),
                   outputs=[(picture(10 + i), i)]) for i in range(2)]
    sid = orig.store_id
    if how.startswith("sqlite"):
        close_sqlite(orig)
        os.rename(tmp_path / "history.db", tmp_path / "old.db")             # mv: the same file
        shutil.copyfile(tmp_path / "old.db", tmp_path / "new.db")           # cp: another one
        original, copy = f"sqlite:///{tmp_path / 'old.db'}", f"sqlite:///{tmp_path / 'new.db'}"
    else:
        db.forget(first)
        orig.engine.dispose()
        name = f"copy_{uuid.uuid4().hex[:8]}"
        postgres._admin(f'CREATE DATABASE "{name}" TEMPLATE "{first.rsplit("/", 1)[1]}"')
        request.addfinalizer(lambda: (db.forget(postgres.url(name)),
                                      postgres.drop_database(postgres.url(name))))
        original, copy = first, postgres.url(name)
    a, b = HistoryStore(original, data), HistoryStore(copy, data)
    assert a.store_id == sid                         # the original (moved, renamed) keeps its id
    assert b.store_id != sid                         # the copy is another database
    b.delete_run(rids[0])
    b.sweep(grace_s=0)
    all_readable(a)                                  # nothing of the original's went
    a.delete_run(rids[1])
    a.sweep(grace_s=0)
    all_readable(b)                                  # ... nor of the copy's


# --------------------------------------------------- 4. one file, two paths; dead store ids --
def test_one_database_through_two_paths_keeps_its_id_and_a_dead_id_can_be_released(tmp_path):
    data = tmp_path / "data"
    main_db, link = data / "history.db", tmp_path / "link.db"
    a = open_store()
    shared = picture(1)
    record(a, source=shared, outputs=[picture(2)])
    record(a, source=picture(3), outputs=[picture(4)])
    sid_a = a.store_id
    close_sqlite(a)
    os.link(main_db, link)                           # the same file through another path
    for path in (link, main_db, link):
        again = HistoryStore(f"sqlite:///{path}", data)
        assert again.store_id == sid_a               # no new id on each open, nothing re-claimed
        close_sqlite(again)
    assert sorted(p.name for p in (data / "refs").iterdir() if p.is_dir()) == [sid_a]

    b_url = f"sqlite:///{tmp_path / 'b.db'}"
    b = HistoryStore(b_url, data)
    record(b, source=shared, outputs=[picture(5)])   # shares a's first photo
    close_sqlite(b)
    only_a = {p.name for p in (data / "images").rglob("*.png")} - {
        Path(p).name for p in run_files(HistoryStore(b_url, data))}
    assert len(only_a) == 3
    main_db.unlink()                                 # rm history.db (both of its names)
    link.unlink()

    env = {"BACKDROP_DATABASE_URL": b_url, "BACKDROP_SWEEP_GRACE_S": "0"}
    listed = cli("history", "store", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[2:]}
    sid_b = HistoryStore(b_url, data).store_id
    assert set(rows) == {sid_a, sid_b}
    assert "this database" in rows[sid_b] and "not found" in rows[sid_a], listed.stdout
    assert "no longer exist" in rows[sid_a]

    assert "own store id" in one_error_line(cli("history", "store", "forget", sid_b, env=env))
    assert "not a store id" in one_error_line(cli("history", "store", "forget", "nope", env=env))
    forgot = cli("history", "store", "forget", sid_a, env=env)
    assert forgot.returncode == 0 and "deleted 6 files" in forgot.stdout, (forgot.stdout, forgot.stderr)
    assert not (data / "refs" / sid_a).exists()
    left = {p.name for p in (data / "images").rglob("*.png")}
    assert not (left & only_a)                       # a's own images are gone ...
    all_readable(HistoryStore(b_url, data))          # ... b's, the shared photo too, are all there


def test_a_process_that_read_no_id_adopts_the_one_another_process_committed_meanwhile(tmp_path):
    """Processes opening a new database at once: one that found no store id, while another
    committed its own, takes that one (two ids for one database delete each other's images)."""
    data = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'h.db'}"
    first = HistoryStore(url, data)
    record(first, source=picture(1), outputs=[picture(2)])
    # The window: this process read "no id yet" (as _identify does) before `first` committed.
    late = first._new_identity(first.fingerprint, None)
    assert late == first.store_id
    assert HistoryStore(url, data).store_id == first.store_id
    assert sorted(p.name for p in (data / "refs").iterdir() if p.is_dir()) == [first.store_id]
    close_sqlite(first)


def test_store_forget_refuses_an_id_in_use_recently_used_or_unchecked(tmp_path):
    """`history store forget` releases nothing it cannot show is dead: an id whose database is
    still there (in use), one used within the grace period, and, without --force, one whose
    database it cannot check (no marker: claims made by an older Backdrop)."""
    data = tmp_path / "data"
    a_url, b_url = (f"sqlite:///{tmp_path / n}" for n in ("a.db", "b.db"))
    a = HistoryStore(a_url, data)
    record(a, source=picture(1), outputs=[picture(2)])
    sid_a = a.store_id
    close_sqlite(a)
    b = HistoryStore(b_url, data)
    record(b, source=picture(3), outputs=[picture(4)])
    close_sqlite(b)
    images = sorted(p.name for p in (data / "images").rglob("*.png"))
    env = {"BACKDROP_DATABASE_URL": b_url, "BACKDROP_SWEEP_GRACE_S": "0"}

    line = one_error_line(cli("history", "store", "forget", sid_a, env=env))
    assert "still in use" in line and "a.db" in line, line
    (tmp_path / "a.db").unlink()                                     # a is gone now, but just used
    line = one_error_line(cli("history", "store", "forget", sid_a,
                              env={**env, "BACKDROP_SWEEP_GRACE_S": "3600"}))
    assert "something may still be writing with it" in line, line
    (data / "refs" / sid_a / ".store").unlink()                      # no record of its database
    line = one_error_line(cli("history", "store", "forget", sid_a, env=env))
    assert "cannot check" in line and "--force" in line, line
    assert sorted(p.name for p in (data / "images").rglob("*.png")) == images   # nothing went yet

    forgot = cli("history", "store", "forget", sid_a, "--force", env=env)
    assert forgot.returncode == 0 and "deleted 4 files" in forgot.stdout, (forgot.stdout, forgot.stderr)
    all_readable(HistoryStore(b_url, data))


# --------------------------------------------------------------- 5. passwords are never shown --
def test_a_password_in_the_database_url_is_never_shown(tmp_path):
    secret = "Hunter2-s3cr3t"
    bad = [f"postgresql+psycopg://bob:{secret}@db.example:notaport/history",   # malformed
           f"postgresql+psycopg://bob:{secret}@db@example/x/y:z",               # malformed, odd
           f"postgres ql://bob:{secret}@db/history",                           # not a URL
           f"postgresql+psycopg://bob:{secret}@127.0.0.1:1/history?password={secret}x"]  # refused
    for url in bad:
        proc = cli("history", "list", env={"BACKDROP_DATABASE_URL": url})
        line = one_error_line(proc)
        assert secret not in proc.stderr + proc.stdout and "***" in line, line
        with pytest.raises(HistoryError) as e:          # what the service relays in its 503s
            HistoryStore(url, tmp_path / "data")
        shown = "".join(traceback.format_exception(e.value))
        assert secret not in shown, shown


# ------------------------------------------------------------------------ 12. a hung S3 endpoint --
class HangingProxy:
    """A TCP proxy in front of the S3 server; hang() makes it accept and never answer (also on
    connections already open), as a hung endpoint does."""

    def __init__(self, upstream: str):
        host, port = upstream.rsplit("//", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.hanging = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def hang(self) -> None:
        self.hanging.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(client)
            if self.hanging.is_set():
                continue                       # accepted; never a byte back
            server = socket.create_connection(self.upstream)
            self.conns.append(server)
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if not self.hanging.is_set():
                    dst.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        for s in (self.sock, *self.conns):
            try:
                s.close()
            except OSError:
                pass


@pytest.mark.s3
def test_a_hung_s3_endpoint_fails_in_bounded_time_says_so_and_never_holds_the_write_lock(
        s3_server, s3_env, monkeypatch, tmp_path, caplog):
    import boto3

    from core.history.blobs import S3Backend
    s3_env(s3_server)
    monkeypatch.delenv("BACKDROP_S3_TIMEOUT_S", raising=False)
    default = S3Backend("s3://b/p").client.meta.config          # the budget out of the box
    assert default.read_timeout * default.retries["total_max_attempts"] <= 30
    assert default.connect_timeout <= 5

    bucket = f"hang-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    proxy = HangingProxy(s3_server)
    try:
        monkeypatch.setenv("BACKDROP_S3_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("BACKDROP_BLOB_URL", f"s3://{bucket}/p")
        monkeypatch.setenv("BACKDROP_S3_TIMEOUT_S", "4")        # the test's budget (default 30)
        db_path = tmp_path / "h.db"
        store = HistoryStore(f"sqlite:///{db_path}", tmp_path / "data")
        rid = record(store, source=picture(1), outputs=[picture(2)])
        proxy.hang()

        failures: list[BaseException] = []

        def delete() -> None:
            try:
                store.delete_run(rid)
            except BaseException as e:  # noqa: BLE001 - the test looks at it
                failures.append(e)

        caplog.set_level(logging.WARNING, logger="core.history")
        started = time.monotonic()
        worker = threading.Thread(target=delete, daemon=True)
        worker.start()
        time.sleep(0.5)
        writes = []           # the write lock is free while the image store is waited on
        while worker.is_alive() and time.monotonic() - started < 15:
            con = sqlite3.connect(db_path, timeout=1.0, isolation_level=None)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.execute("ROLLBACK")
                writes.append(True)
            except sqlite3.OperationalError as e:
                writes.append(str(e))
            finally:
                con.close()
            time.sleep(0.3)
        worker.join(timeout=15)
        elapsed = time.monotonic() - started
        assert not worker.is_alive() and elapsed < 12, elapsed
        assert writes and all(w is True for w in writes), writes
        assert failures and isinstance(failures[0], HistoryError)
        line = str(failures[0])
        assert "\n" not in line and f"s3://{bucket}/p" in line and "not answering" in line, line
        assert store.count_runs() == 0                               # the rows did go
        assert any("no answer for" in r.getMessage() or "not answering" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]

        started = time.monotonic()                                   # a new run: one bounded wait
        with pytest.raises(HistoryError, match="not answering"):
            record(store, source=picture(3), outputs=[picture(4)])
        assert time.monotonic() - started < 8
        assert store.count_runs() == 0
    finally:
        proxy.close()


# -------------------------------------------- 16. a process older than the database's schema --
def test_a_write_after_a_newer_backdrop_upgraded_the_database_says_so(history_url):
    from sqlalchemy import create_engine, text

    store = open_store()
    record(store, source=picture(1))
    newer = create_engine(history_url)        # a newer Backdrop migrates the database meanwhile
    with newer.begin() as conn:
        conn.execute(text("ALTER TABLE runs RENAME COLUMN search_text TO search_text_v9"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    newer.dispose()
    for attempt in (lambda: record(store, source=picture(2)), lambda: store.list_runs()):
        with pytest.raises(HistoryError) as e:
            attempt()
        msg = str(e.value)
        assert "\n" not in msg and "upgraded by a newer Backdrop" in msg, msg
        assert "0099_from_the_future" in msg and "restart" in msg


# --------------------------------------------------------- also: durable renames, sweep report --
def test_an_atomic_write_syncs_the_file_then_the_folder_after_the_rename(tmp_path, monkeypatch):
    """fsync(temp file), rename, fsync(folder) (and the parent of each folder it made): what
    SQLite does, so a power cut cannot undo a rename history already relies on. The calls are
    the real ones, watched on their way through."""
    from core import files

    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        calls.append(("rename", str(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    target = tmp_path / "new" / "ab" / "x.png"
    files.atomic_write_bytes(target, b"data")
    assert target.read_bytes() == b"data"
    i = calls.index(("rename", str(target)))
    assert calls[i - 1][0] == "fsync" and ".x.png.backdrop-" in calls[i - 1][1]
    after = [p for op, p in calls[i + 1:] if op == "fsync"]
    assert after[0] == str(target.parent)
    assert {str(tmp_path / "new"), str(tmp_path)} <= set(after)   # the folders it made, too


def test_a_new_claim_is_synced_to_disk_before_claim_returns(tmp_path, monkeypatch):
    """An image's claim is what stops another database deleting it: a claim file lost in a power
    cut after the run was committed could cost the image, so claiming fsyncs the new claim's
    folder (and the folders it made); claiming again (already on disk) syncs nothing."""
    from core import files
    from core.history.blobs import BlobStore, FolderBackend

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    blobs = BlobStore(FolderBackend(tmp_path), "0" * 32)
    digest = "ab" + "1" * 62
    blobs.claim([digest])
    claim = next((tmp_path / "refs" / ("0" * 32)).rglob("*" + digest + "*"))
    assert str(claim.parent) in synced and str(tmp_path / "refs") in synced
    synced.clear()
    blobs.claim([digest])
    assert synced == []


def test_the_opening_sweep_logs_what_it_found(tmp_path, monkeypatch, caplog):
    store = open_store()
    rid = record(store, source=picture(1), outputs=[picture(2)])
    store.blobs.prepare(picture(3), thumb=True)                      # a writer died before its row
    Path(store.get_run(rid).outputs[0].thumb_path).unlink()           # lost behind our back
    monkeypatch.setenv("BACKDROP_SWEEP_GRACE_S", "0")
    with caplog.at_level(logging.WARNING, logger="core.history"):
        open_store(sweep=True)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2 unused file(s) removed" in m and "1 file(s) that runs list are missing" in m
               for m in lines), lines


def test_a_container_named_by_backdrop_machine_id_keeps_its_store_id_across_host_names(
        tmp_path, monkeypatch):
    """A container gets a new host name at each start: with BACKDROP_MACHINE_ID its history keeps
    its store id (no claiming every image again); without it, the new host name is a new machine."""
    from core.history import identity
    data, url = tmp_path / "data", f"sqlite:///{tmp_path / 'h.db'}"
    monkeypatch.setenv("BACKDROP_MACHINE_ID", "shop-app")
    ids = []
    for host in ("c0ffee01", "c0ffee02"):
        monkeypatch.setattr(identity, "HOST", host)
        store = HistoryStore(url, data)
        record(store, source=picture(len(ids)), outputs=[picture(9)])
        ids.append(store.store_id)
        close_sqlite(store)
    assert ids[0] == ids[1]
    monkeypatch.delenv("BACKDROP_MACHINE_ID")
    assert HistoryStore(url, data).store_id != ids[0]
