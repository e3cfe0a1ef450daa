"""Several processes writing one history at once, and processes killed in the middle of a save: on
SQLite and on the session's PostgreSQL server (every test runs on both, see `history_url`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from core.history import RunQuery, open_store
from core.history.models import Output, Run, Source
from browser_helpers import bench_module
from runs import record
from waiting import wait_until

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("history_url")

# A writer process: N runs through start_run/finish_run (two transactions each, like core.jobs),
# every run with its own output and mask and ONE source shared by all processes.
WRITER = r"""
import sys
import numpy as np
from core.history import open_store
sys.path.insert(0, "tests/kit")
from runs import record, start  # noqa: E402
worker, n = int(sys.argv[1]), int(sys.argv[2])
store = open_store()
shared = np.full((24, 32, 3), 77, np.uint8)
for i in range(n):
    rng = np.random.default_rng(worker * 1000 + i)
    rid = start(store, source=shared, background="sd", prompt=f"worker{worker}x run {i}",
                          seed=i, steps=2, clicks=[(i, worker, 1)])
    out = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    mask = (rng.random((24, 32)) > 0.5).astype(np.uint8) * 255
    store.finish_run(rid, mask=mask, outputs=[(out, i)], timings={"w": worker})
"""

# Writes its files, flushes its rows, then sleeps inside the open transaction until killed.
CRASHER = r"""
import sys, time
import numpy as np
from core.history import open_store, store as store_mod
sys.path.insert(0, "tests/kit")
from runs import record, start  # noqa: E402
mode, marker = sys.argv[1], sys.argv[2]
s = open_store()
src = np.full((16, 16, 3), 200, np.uint8)
out = np.random.default_rng(5).integers(0, 256, (16, 16, 3), dtype=np.uint8)
mask = np.zeros((16, 16), np.uint8)
mask[4:12, 4:12] = 255

def pause(op):
    open(marker, "w").write(op)
    time.sleep(120)

if mode == "record":
    store_mod._before_commit_hook = pause
    record(s, source=src, mask=mask, outputs=[(out, 1)], background="sd", prompt="never saved")
elif mode == "finish":
    rid = start(s, source=src, background="sd", prompt="half done")
    store_mod._before_commit_hook = pause
    s.finish_run(rid, mask=mask, outputs=[(out, 1)])
elif mode == "start":
    start(s, source=src, background="sd", prompt="left running")
    open(marker, "w").write("started")
    time.sleep(120)
"""


def _spawn(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env,
                            stderr=subprocess.PIPE, text=True)


with bench_module("history") as bench_history:     # the check bench/history.py --stress makes too
    _integrity = bench_history.integrity


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for area in ("images", "thumbs") if (root / area).is_dir()
            for p in (root / area).rglob("*") if p.is_file()}


def test_concurrent_writer_processes_lose_nothing():
    workers, runs = 4, 20
    procs = [_spawn(WRITER, w, runs) for w in range(workers)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = open_store(sweep=False)
    assert store.count_runs() == workers * runs
    assert store.count_runs(RunQuery(status="succeeded")) == workers * runs
    with store.database.read() as s:
        assert s.scalar(select(func.count(Source.id))) == 1          # dedupe held under contention
        assert s.scalar(select(func.count(Output.id))) == workers * runs
    for w in range(workers):
        assert store.count_runs(RunQuery(text=f"worker{w}x")) == runs
    for r in store.iter_runs():
        assert r.mask.path.is_file() and r.outputs[0].path.is_file() and r.outputs[0].thumb_path.is_file()
    assert _integrity(store) == "ok"
    assert store.sweep(grace_s=0).removed_files == 0                 # no orphans were left


def _kill_when_paused(mode: str, tmp_path: Path) -> None:
    marker = tmp_path / f"{mode}.paused"
    proc = _spawn(CRASHER, mode, marker)
    wait_until(lambda: marker.exists() or proc.poll() is not None, 60, "the crasher to reach its pause")
    if proc.poll() is not None:
        pytest.fail(f"crasher exited early: {proc.stderr.read()}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_kill_during_record_leaves_no_row_and_sweep_removes_orphans(tmp_path):
    _kill_when_paused("record", tmp_path)
    data = tmp_path / "data"
    assert len(_files(data)) == 5          # source png+thumb, mask png, output png+thumb: orphans
    store = open_store(sweep=False)        # recovers the WAL left by the killed writer
    assert store.count_runs() == 0
    with store.database.read() as s:
        assert s.scalar(select(func.count(Source.id))) == 0
        assert s.scalar(select(func.count(Output.id))) == 0
    report = store.sweep(grace_s=0)
    assert report.removed_files == 5 and _files(data) == set()
    assert _integrity(store) == "ok"
    record(store, source=np.zeros((4, 4, 3), np.uint8), background="blur:1")  # still writable
    assert store.count_runs() == 1


def test_kill_during_finish_marks_run_interrupted_and_keeps_source(tmp_path):
    _kill_when_paused("finish", tmp_path)
    store = open_store(sweep=False)        # any open marks the dead process's run; deletes nothing
    (run,) = store.list_runs().runs
    assert run.status == "failed" and run.error.startswith("process stopped")
    assert run.outputs == () and run.mask is None                               # no half rows
    assert len(_files(tmp_path / "data")) == 5
    report = store.sweep(grace_s=0)
    assert report.interrupted == 0 and report.removed_files == 3   # mask, output png + thumb
    assert _files(tmp_path / "data") == {
        str(run.source.path.relative_to(tmp_path / "data")),
        str(run.source.thumb_path.relative_to(tmp_path / "data"))}
    assert _integrity(store) == "ok"


def test_run_left_running_by_a_dead_process_is_failed_on_open(tmp_path):
    _kill_when_paused("start", tmp_path)
    store = open_store(sweep=False)        # even a read-only open recovers
    (run,) = store.list_runs().runs
    assert run.status == "failed" and run.error.startswith("process stopped")
    assert run.source.path.is_file()
    with store.database.read() as s:
        assert s.scalar(select(Run.owner).where(Run.id == run.id)) == ""
