"""History on a real PostgreSQL server (the session's, tests/pg.py): what only a server has.

The whole history suite also runs on PostgreSQL (tests/test_history*.py, `history_url`); here:
the write lock that keeps writers one at a time (as BEGIN IMMEDIATE does on SQLite), a server
restarted in the middle of a run (the run is recorded exactly once, never half), a server that
stays down (one clear line, nothing written), several processes opening an empty database at once,
export and favourites, text PostgreSQL cannot hold.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.session import SessionTransaction

from core.errors import HistoryError
from core.history import RunQuery, db, open_store, writes
from core.history import store as store_mod
from core.history.models import Mask, Output, Run, Source, StoreInfo
from runs import record, start

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(pg_url):
    return open_store()


def counts(store) -> dict[str, int]:
    with store.database.read() as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m))
                for m in (Run, Output, Mask, Source)}


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


def mask_of(img: np.ndarray) -> np.ndarray:
    m = np.zeros(img.shape[:2], np.uint8)
    m[10:-10, 20:-20] = 255
    return m


@pytest.fixture
def restart_once(monkeypatch, postgres):
    """Arm the store's before-commit hook: the first time `op` reaches it (files written, rows
    flushed, COMMIT not yet sent) the server is restarted, cutting the transaction."""
    fired: list[str] = []

    def arm(op: str) -> list[str]:
        def hook(name: str) -> None:
            if name == op and not fired:
                fired.append(name)
                postgres.restart()
        monkeypatch.setattr(store_mod, "_before_commit_hook", hook)
        return fired
    return arm


# ----------------------------------------------------------------------------- engine, locks --
def test_engine_and_one_writer_at_a_time(store, pg_url, coffee):
    assert store.engine.dialect.name == "postgresql" and store.engine.pool._pre_ping
    assert store.url == pg_url and db.current_revision(store.engine) == db.head_revision()
    watcher = create_engine(pg_url)
    locks = ("SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) "
             "FROM pg_locks WHERE locktype = 'advisory'")
    done: list[int] = []
    try:
        with store.database.write():
            t = threading.Thread(target=lambda: done.append(
                record(store, source=coffee, background="blur:2")))
            t.start()
            deadline = time.monotonic() + 10
            while True:   # the second writer queues on the lock we hold
                with watcher.connect() as c:
                    held, waiting = c.exec_driver_sql(locks).one()
                if waiting == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert (held, waiting) == (1, 1) and not done
        t.join(10)
        assert len(done) == 1 and store.count_runs() == 1
        with watcher.connect() as c:
            assert tuple(c.exec_driver_sql(locks).one()) == (0, 0)     # ends with the transaction
    finally:
        watcher.dispose()


def test_a_writer_kept_waiting_too_long_gets_the_busy_line(store, coffee, monkeypatch):
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 300)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            record(store, source=coffee, background="blur:2")
        except HistoryError as e:
            errors.append(e)
    with store.database.write():
        t = threading.Thread(target=second)
        t.start()
        t.join(10)
    assert len(errors) == 1 and "busy" in one_line(errors[0])
    assert store.count_runs() == 0
    record(store, source=coffee, background="blur:2")       # and the next one goes through
    assert store.count_runs() == 1


def test_processes_opening_an_empty_database_at_once_migrate_it_once(pg_url):
    code = ("from core.history import open_store; s = open_store(sweep=True); print(s.store_id)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [e for _, e in outs]
    assert len({o.strip() for o, _ in outs}) == 1                   # one identity for everyone
    s = open_store()
    assert db.current_revision(s.engine) == db.head_revision()
    with s._read() as session:
        assert session.scalar(select(func.count()).select_from(StoreInfo)) == 3   # id, fingerprints, location


# ------------------------------------------------------------------------- connection loss --
def test_server_restarted_between_start_and_finish(store, postgres, coffee):
    rid = start(store, source=coffee, background="sd", prompt="across a restart")
    postgres.restart()                     # every pooled connection is dead now
    store.finish_run(rid, mask=mask_of(coffee), outputs=[(coffee[::-1].copy(), 5)])
    r = store.get_run(rid)
    assert r.status == "succeeded" and [o.seed for o in r.outputs] == [5] and r.mask is not None
    assert counts(store) == {"runs": 1, "outputs": 1, "masks": 1, "sources": 1}


@pytest.mark.parametrize("op", ["start_run", "finish_run", "record_run", "fail_run"])
def test_server_restarted_in_the_middle_of_a_write(store, restart_once, coffee, op, caplog):
    out, mask = coffee[:, ::-1].copy(), mask_of(coffee)
    fired = restart_once(op)
    with caplog.at_level(logging.WARNING, logger="core.history.writes"):
        if op == "record_run":
            rid = record(store, source=coffee, mask=mask, outputs=[(out, 9)], background="sd",
                         prompt="cut mid-commit")
        else:
            rid = start(store, source=coffee, background="sd", prompt="cut mid-commit")
            if op == "finish_run":
                store.finish_run(rid, mask=mask, outputs=[(out, 9)])
            elif op == "fail_run":
                store.fail_run(rid, "CUDA out of memory", mask=mask)
    assert fired == [op]                                   # the cut really happened
    assert "connection lost" in caplog.text
    (run,) = store.list_runs().runs                        # recorded once
    assert run.id == rid
    if op == "start_run":
        assert run.status == "running" and counts(store)["outputs"] == 0
        store.finish_run(rid, outputs=[(out, 9)])
        run = store.get_run(rid)
    if op == "fail_run":
        assert (run.status, run.error, run.outputs) == ("failed", "CUDA out of memory", ())
        assert counts(store) == {"runs": 1, "outputs": 0, "masks": 1, "sources": 1}
    else:
        assert run.status == "succeeded" and [o.seed for o in run.outputs] == [9]
        assert counts(store)["outputs"] == 1
        assert run.outputs[0].path.is_file() and run.outputs[0].thumb_path.is_file()
    assert store.count_runs(RunQuery(text="CUT MID-COMMIT")) == 1


def test_server_restarted_in_the_middle_of_a_delete(store, restart_once, coffee, chelsea):
    a = record(store, source=coffee, outputs=[(coffee[::-1].copy(), 1)], background="blur:1")
    b = record(store, source=chelsea, outputs=[(chelsea[::-1].copy(), 2)], background="blur:1")
    ra, rb = store.get_runs([a, b])
    fired = restart_once("delete_run")
    assert store.delete_run(a) == 4                  # source png + thumb, output png + thumb
    assert fired == ["delete_run"]
    assert [r.id for r in store.list_runs().runs] == [b]
    assert not ra.outputs[0].path.exists() and not ra.source.path.exists()
    assert rb.outputs[0].path.is_file() and rb.source.thumb_path.is_file()
    assert counts(store) == {"runs": 1, "outputs": 1, "masks": 0, "sources": 1}


@pytest.mark.parametrize("op", ["record_run", "finish_run"])
def test_commit_cut_after_the_server_committed_is_not_done_twice(store, monkeypatch, coffee, op):
    """The worst case of a lost connection: COMMIT reached the server but its answer was lost.
    The retry must find the work done instead of recording the run (or its outputs) again."""
    real = SessionTransaction.commit
    armed: list[bool] = []

    def commit(self, *a, **kw):
        result = real(self, *a, **kw)
        if armed and self.parent is None:          # the real COMMIT, not a flush's subtransaction
            armed.pop()
            raise OperationalError("COMMIT", {}, Exception("server closed the connection "
                                                           "unexpectedly"),
                                   connection_invalidated=True)
        return result
    monkeypatch.setattr(SessionTransaction, "commit", commit)
    out = coffee[::2, ::2].copy()
    if op == "record_run":
        armed.append(True)
        rid = record(store, source=coffee, outputs=[(out, 1)], background="blur:4")
    else:
        rid = start(store, source=coffee, background="blur:4")
        armed.append(True)
        store.finish_run(rid, outputs=[(out, 1)])
    assert not armed                                       # the cut happened
    assert [r.id for r in store.list_runs().runs] == [rid]
    assert [o.seed for o in store.get_run(rid).outputs] == [1]
    assert counts(store)["outputs"] == 1


def test_server_down_fails_with_one_line_and_writes_nothing(store, postgres, coffee, monkeypatch):
    monkeypatch.setattr(writes, "RECONNECT_S", 1.0)
    rid = start(store, source=coffee, background="blur:3")
    postgres.pause()
    try:
        with pytest.raises(HistoryError) as e:
            store.finish_run(rid, mask=mask_of(coffee), outputs=[(coffee[::-1].copy(), 1)])
        assert "lost the connection to the history database" in one_line(e.value)
        with pytest.raises(HistoryError) as e:
            record(store, source=coffee, background="blur:3")
        one_line(e.value)
        with pytest.raises(HistoryError) as e:
            store.list_runs()
        one_line(e.value)
    finally:
        postgres.resume()
    r = store.get_run(rid)                                  # nothing half-written
    assert (r.status, r.outputs, r.mask) == ("running", (), None)
    assert counts(store) == {"runs": 1, "outputs": 0, "masks": 0, "sources": 1}
    store.fail_run(rid, "gave up")
    assert store.get_run(rid).status == "failed"


def test_run_job_survives_a_restart_mid_run(pg_url, postgres, chelsea, restart_once):
    from core.images import LoadedImage
    from core.jobs import JobRequest, run_job
    from core.spec import RunSpec

    fired = restart_once("finish_run")                 # and once more while saving the outputs
    stages: list[str] = []

    def progress(stage: str, _fraction: float) -> None:
        if stage == "mask" and not stages:
            postgres.restart()                         # between start_run and finish_run
        stages.append(stage)
    req = JobRequest(image=LoadedImage(rgb=chelsea, format="PNG"), mask=mask_of(chelsea),
                     spec=RunSpec(background="color:#00ff00"), source_name="cat.png")
    result = run_job(req, progress=progress)
    assert result.record_error is None and result.run_id is not None and fired == ["finish_run"]
    store = open_store()
    (run,) = store.list_runs().runs
    assert run.id == result.run_id and run.status == "succeeded" and len(run.outputs) == 1
    assert counts(store) == {"runs": 1, "outputs": 1, "masks": 1, "sources": 1}


def test_unreachable_server_is_one_line(monkeypatch):
    pytest.importorskip("psycopg")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://backdrop@127.0.0.1:{port}/nowhere"
    monkeypatch.setenv("BACKDROP_DATABASE_URL", url)
    try:
        with pytest.raises(HistoryError) as e:
            open_store()
        assert "could not open the history database" in one_line(e.value)
    finally:
        db.forget(url)


# ---------------------------------------------------------------------------- data, export --
def test_favourites_and_export(store, coffee, chelsea, tmp_path):
    from core.export import export_runs

    a = record(store, source=coffee, mask=mask_of(coffee), background="sd", prompt="red barn",
               outputs=[(coffee[::-1].copy(), 1), (coffee[:, ::-1].copy(), 2)])
    b = record(store, source=chelsea, background="color:#ff0000", outputs=[chelsea[::-1].copy()])
    fav = store.get_run(a).outputs[1]
    store.set_favorite(fav.id)
    store.set_favorite(fav.id)                             # idempotent
    assert [r.id for r in store.list_runs(RunQuery(favorites=True)).runs] == [a]
    res = export_runs(tmp_path / "fav.zip", favorites=True, store=store)
    assert (res.runs, res.outputs, res.masks) == (1, 1, 1)
    res = export_runs(tmp_path / "all.zip", store=store)
    assert (res.runs, res.outputs) == (2, 3)
    with zipfile.ZipFile(tmp_path / "all.zip") as z:
        names = z.namelist()
    assert sum(n.startswith("outputs/") for n in names) == 3
    assert any(f"run-{b:06d}" in n for n in names)


def test_text_postgres_cannot_hold_and_unicode_search(store):
    src = np.zeros((4, 4, 3), np.uint8)
    rid = record(store, source=src, background="sd", prompt="nul\x00 byte Ünïcode Straße",
                 negative="x\x00y", source_name="a\x00b.png")
    r = store.get_run(rid)
    assert (r.prompt, r.spec.generation.negative, r.source_name) == (
        "nul byte Ünïcode Straße", "xy", "ab.png")
    q = lambda t: [x.id for x in store.list_runs(RunQuery(text=t)).runs]   # noqa: E731
    assert q("ÜNÏCODE") == [rid] and q("strasse") == [rid] and q("100%") == []


def test_plain_postgresql_url_uses_psycopg(pg_url, monkeypatch):
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    monkeypatch.setenv("BACKDROP_DATABASE_URL", url)
    try:
        s = open_store()
        assert s.engine.url.drivername == "postgresql+psycopg"
        record(s, source=np.zeros((4, 4, 3), np.uint8), background="transparent")
        assert s.count_runs() == 1
    finally:
        with store_mod._stores_lock:
            for key in [k for k in store_mod._stores if k[1] == url]:
                del store_mod._stores[key]
        db.forget(url)
