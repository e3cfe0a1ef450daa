"""Nothing a user has is lost or damaged: the history's images under a shared data folder, outputs
when the history cannot record, input photos, whatever sits at an output path, stale runs, and the
terminal. One test (or more) per case of issue 10; each reproduces what went wrong before."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.history import open_store
from core.images import content_hash, load_image
from core.jobs import JobRequest, run_job
from core.spec import RunSpec
from runs import record
from cli_kit import assert_one_line_error, run_cli as cli

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str, limit: int = 320) -> str:
    return assert_one_line_error(proc, *fragments, limit=limit)


def image_files(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for area in ("images", "thumbs")
            if (data / area).is_dir() for p in sorted((data / area).rglob("*")) if p.is_file()}


def tint(rgb: np.ndarray, k: int) -> np.ndarray:
    return ((rgb.astype(np.int32) + k * 37) % 256).astype(np.uint8)


@pytest.fixture
def small(chelsea) -> np.ndarray:
    return np.ascontiguousarray(chelsea[::4, ::4])          # 75x113: quick to store


@pytest.fixture
def photo(tmp_path, chelsea) -> Path:
    path = tmp_path / "in" / "cat.png"
    path.parent.mkdir()
    Image.fromarray(np.ascontiguousarray(chelsea[::3, ::3])).save(path)
    return path


@pytest.fixture
def mask_png(tmp_path, photo) -> Path:
    with Image.open(photo) as im:
        w, h = im.size
    m = np.zeros((h, w), np.uint8)
    m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    path = tmp_path / "in" / "mask.png"
    Image.fromarray(m).save(path)
    return path


def record_some(store, small: np.ndarray, n: int = 2) -> list[int]:
    mask = np.zeros(small.shape[:2], np.uint8)
    mask[10:40, 10:60] = 255
    return [record(store, source=small, mask=mask, outputs=[(tint(small, i + 1), i)],
                             background="sd", prompt=f"run {i}") for i in range(n)]


def all_images_readable(store) -> None:
    for run in store.iter_runs():
        for path in [run.source.path, run.source.thumb_path, *(o.path for o in run.outputs),
                     *(o.thumb_path for o in run.outputs)] + ([run.mask.path] if run.mask else []):
            assert path.is_file(), path


# ------------------------------------------------------------ 1. the sweep and shared data folders
@pytest.mark.parametrize("other", ["another.db", "memory", "zero-byte"])
def test_opening_another_database_on_the_data_folder_deletes_nothing(tmp_path, small, other):
    data = tmp_path / "data"
    store = open_store()
    record_some(store, small)
    before = image_files(data)
    assert len(before) == 7                  # source png+webp, mask, 2 outputs png+webp
    if other == "memory":
        url = "sqlite://"
    else:
        db = tmp_path / "elsewhere" / "history.db"
        db.parent.mkdir()
        if other == "zero-byte":
            db.write_bytes(b"")
        url = f"sqlite:///{db}"
    env = {"BACKDROP_DATABASE_URL": url, "BACKDROP_SWEEP_GRACE_S": "0"}
    listed = cli("history", "list", env=env)
    assert listed.returncode == 0 and "no runs yet" in listed.stdout, listed.stderr
    assert image_files(data) == before
    # a writer on the other database sweeps: it still only ever deletes what it claimed itself
    other_store = open_store(url=url)
    record(other_store, source=tint(small, 9), background="blur:3")
    other_store.sweep(grace_s=0)
    assert {k: v for k, v in image_files(data).items() if k in before} == before
    assert store.sweep(grace_s=0).missing_files == 0
    all_images_readable(store)


def test_two_databases_sharing_one_data_folder_never_lose_a_file(tmp_path, small):
    data = tmp_path / "data"
    a = open_store(url=f"sqlite:///{tmp_path / 'a.db'}")
    b = open_store(url=f"sqlite:///{tmp_path / 'b.db'}")
    assert a.store_id != b.store_id
    ra = record_some(a, small)               # both use the same photo, mask and first output
    rb = record_some(b, small, n=1)
    b_files = {str(p) for r in b.iter_runs() for p in
               (r.source.path, r.source.thumb_path, r.mask.path, r.outputs[0].path)}
    for rid in ra:                           # a deletes everything it has: b's copies stay
        a.delete_run(rid)
    for s in (a, b):
        s.sweep(grace_s=0)
    assert all(Path(p).is_file() for p in b_files)
    all_images_readable(b)
    assert a.count_runs() == 0
    # once no database claims an image any more, it does go
    b.delete_run(rb[0])
    assert image_files(data) == {}


def test_a_copied_database_gets_its_own_claims(tmp_path, small):
    data = tmp_path / "data"
    orig = open_store()
    (rid, _) = record_some(orig, small)
    copy_path = tmp_path / "backup.db"
    import sqlite3
    with sqlite3.connect(data / "history.db") as src, sqlite3.connect(copy_path) as dst:
        src.backup(dst)                      # what a user's backup makes
    copy = open_store(url=f"sqlite:///{copy_path}")
    assert copy.store_id != orig.store_id    # same rows, another database
    copy.delete_run(rid)
    copy.sweep(grace_s=0)
    all_images_readable(orig)
    orig.delete_run(rid)
    all_images_readable(copy)


def test_a_moved_database_keeps_its_identity(tmp_path, small):
    first = tmp_path / "old.db"
    s = open_store(url=f"sqlite:///{first}")
    record_some(s, small, n=1)
    sid = s.store_id
    s.engine.dispose()
    moved = tmp_path / "new.db"
    first.rename(moved)
    assert open_store(url=f"sqlite:///{moved}").store_id == sid


def test_images_of_a_database_from_before_claims_are_adopted_not_deleted(tmp_path, small):
    from sqlalchemy import delete

    from core.history.models import StoreInfo

    data = tmp_path / "data"
    store = open_store()
    record_some(store, small)
    stray = data / "images" / "ff" / ("f" * 64 + ".png")    # nobody's (an older crash, another tool)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"not ours to judge")
    shutil.rmtree(data / "refs")             # as an older Backdrop left the folder
    with store.database.write() as session:
        session.execute(delete(StoreInfo))
    from core.history import HistoryStore
    again = HistoryStore(store.url, data)    # opened as by the first Backdrop with claims
    assert again.store_id != store.store_id
    again.sweep(grace_s=0)
    all_images_readable(again)
    assert stray.is_file()


def test_read_only_commands_never_delete(tmp_path, small):
    data = tmp_path / "data"
    store = open_store()
    record_some(store, small, n=1)
    orphan = store.blobs.prepare(tint(small, 50), thumb=True)   # a writer died before its row
    env = {"BACKDROP_SWEEP_GRACE_S": "0"}
    assert cli("history", "list", env=env).returncode == 0
    assert cli("history", "export", tmp_path / "x.zip", "--ids", "1", env=env).returncode == 0
    assert (data / orphan.path).is_file()
    assert store.sweep(grace_s=0).removed_files == 2           # a writer's sweep takes it
    assert not (data / orphan.path).exists()


# ------------------------------------------------------------ 2. outputs survive a history failure
def test_outputs_are_returned_and_the_run_marked_failed_when_history_cannot_store_them(tmp_path, photo):
    image = load_image(photo)
    m = np.zeros(image.rgb.shape[:2], np.uint8)
    m[20:60, 30:90] = 255
    data = tmp_path / "data"
    for colour in ("#00ff00", "#ff00ff", "#123456", "#abcdef"):
        request = JobRequest(image=image, spec=RunSpec(background=f"color:{colour}"), mask=m)
        expected = run_job(request, record=False).outputs[0]
        shard = content_hash(expected)[:2]
        if shard not in (image.hash[:2], content_hash(m)[:2]):
            break
    (data / "images").mkdir(parents=True)
    (data / "images" / shard).write_bytes(b"")        # the output's folder cannot be made
    result = run_job(request)
    assert np.array_equal(result.outputs[0], expected)
    assert result.run_id is None and "cannot write history files" in result.record_error
    (run,) = open_store().list_runs().runs
    assert run.status == "failed" and "could not be saved" in run.error
    assert "Not a directory" in run.error or "File exists" in run.error
    assert f"history run {run.id} is marked failed" in result.record_error


def test_a_run_that_fails_after_its_row_was_deleted_says_so_in_the_log(photo, caplog):
    """Issue 18: the job's own error is what the caller sees, but a history that could not be
    told (the running run deleted from another tab) is logged at WARNING, not swallowed."""
    image = load_image(photo)
    request = JobRequest(image=image, spec=RunSpec(background="color:#00ff00"),
                         mask=np.full(image.rgb.shape[:2], 255, np.uint8))

    def delete_the_running_run(stage: str, fraction: float) -> None:
        store = open_store()
        for run in store.list_runs().runs:
            store.delete_run(run.id)
        raise RuntimeError("the tab was closed")                    # and the run fails

    with caplog.at_level("WARNING", logger="core.jobs"), pytest.raises(RuntimeError):
        run_job(request, progress=delete_the_running_run)
    assert any("could not be marked failed" in r.getMessage() and "not in the history" in r.getMessage()
               for r in caplog.records)


def _namespace_shell() -> list[str] | None:
    """A command prefix that runs a shell in a private mount namespace (to mount a small tmpfs),
    or None when this machine allows neither user namespaces nor root."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-rm"], ["unshare", "-m"]):
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                               capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


@pytest.mark.parametrize("db_on_full_disk", [False, True])
def test_full_disk_while_recording_still_writes_the_output(tmp_path, photo, mask_png, db_on_full_disk):
    prefix = _namespace_shell()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs here (no user namespaces and not root)")
    data = tmp_path / "full"
    data.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    db = data / "history.db" if db_on_full_disk else tmp_path / "history.db"
    py = f"{sys.executable} -m core"
    common = f"{photo} --mask {mask_png}"
    script = f"""
set -u
mount -t tmpfs -o size=1m tmpfs {data} || exit 97
{py} replace {common} --out {out}/first.png --background color:#00ff00 || exit 98
head -c 2000000 /dev/zero > {data}/filler 2>/dev/null
{py} replace {common} --out {out}/second.png --background color:#0000ff 2> {out}/err.txt
echo $? > {out}/rc.txt
find {data} -name '*.tmp' > {out}/temps.txt
{py} history list --json > {out}/list.json 2> {out}/list-err.txt
echo $? > {out}/list-rc.txt
"""
    env = {**os.environ, "BACKDROP_DATA_DIR": str(data), "BACKDROP_DATABASE_URL": f"sqlite:///{db}"}
    proc = subprocess.run([*prefix, "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert (out / "rc.txt").read_text().strip() == "2"
    err = [l for l in (out / "err.txt").read_text().splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("error: the output was written"), err
    # the data folder is full; SQLite says so in its own words when the database is there too
    assert any(cause in err[0] for cause in ("No space left on device", "disk is full", "disk I/O error"))
    with Image.open(out / "second.png") as im:           # the finished output was not lost
        second = np.asarray(im.convert("RGB"))
    assert (second[0, 0] == [0, 0, 255]).all()
    assert (out / "temps.txt").read_text().strip() == ""  # no half-written file left behind
    if not db_on_full_disk:
        import json
        runs = json.loads((out / "list.json").read_text())
        assert [r["status"] for r in runs] == ["failed", "succeeded"]
        assert "No space left on device" in runs[0]["error"] and "could not be saved" in runs[0]["error"]


# ------------------------------------------------------------ 3. the input photo is never overwritten
@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "mask"])
def test_out_that_is_an_input_is_refused(tmp_path, photo, mask_png, how):
    target = {"same": photo, "mask": mask_png, "symlink": tmp_path / "link.png",
              "hardlink": tmp_path / "hard.png"}[how]
    if how == "symlink":
        target.symlink_to(photo)
    if how == "hardlink":
        os.link(photo, target)
    before = {p: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) for p in (photo, mask_png)}
    for extra in ([], ["--no-history"]):
        proc = cli("replace", photo, "--mask", mask_png, "--out", target, "--background", "blur:4", *extra)
        one_line_error(proc, "--overwrite")
    if how != "mask":                        # segment reads the photo only
        proc = cli("segment", photo, "--point", "10,10", "--segmenter", "grabcut", "--out", target)
        one_line_error(proc, "--overwrite")
    assert {p: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) for p in (photo, mask_png)} == before


def test_overwrite_replaces_the_input_when_asked(tmp_path, photo, mask_png):
    mode = stat.S_IMODE(photo.stat().st_mode)
    proc = cli("replace", photo, "--mask", mask_png, "--out", photo, "--background", "color:#ff0000",
               "--overwrite")
    assert proc.returncode == 0, proc.stderr
    with Image.open(photo) as im:
        assert (np.asarray(im.convert("RGB"))[0, 0] == [255, 0, 0]).all()
    assert stat.S_IMODE(photo.stat().st_mode) == mode


# ------------------------------------------------------------ 4. what already sits at an output path
def test_non_regular_files_at_an_output_path_are_refused(tmp_path, photo, mask_png):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    sock_path = tmp_path / "s.zip"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    link_to_fifo = tmp_path / "to-pipe.png"
    link_to_fifo.symlink_to(fifo)
    try:
        for target in (fifo, folder, link_to_fifo):
            one_line_error(cli("replace", photo, "--mask", mask_png, "--out", target,
                               "--background", "blur:2", "--no-history"), "not a regular file")
        record(open_store(), source=np.zeros((4, 4, 3), np.uint8), background="blur:1",
                                outputs=[np.zeros((4, 4, 3), np.uint8)])
        for target in (fifo, sock_path, folder):
            one_line_error(cli("history", "export", target, "--ids", "1"), "not a regular file")
    finally:
        sock.close()
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISSOCK(sock_path.lstat().st_mode)
    assert folder.is_dir() and list(folder.iterdir()) == [] and link_to_fifo.is_symlink()


def test_history_storage_is_never_an_output(tmp_path):
    store = open_store()
    record(store, source=np.zeros((4, 4, 3), np.uint8), background="blur:1",
                     outputs=[np.ones((4, 4, 3), np.uint8)])
    db = tmp_path / "data" / "history.db"
    before = db.read_bytes()
    one_line_error(cli("history", "export", db, "--ids", "1"), "history storage")
    png = store.get_run(1).outputs[0].path
    one_line_error(cli("history", "export", png, "--ids", "1"), "history storage")
    assert db.read_bytes() == before and png.is_file()


def test_a_symlink_at_the_output_is_followed_and_kept(tmp_path, photo, mask_png):
    real = tmp_path / "real" / "result.png"
    real.parent.mkdir()
    real.write_bytes(b"old result")
    link = tmp_path / "result.png"
    link.symlink_to(real)
    proc = cli("replace", photo, "--mask", mask_png, "--out", link, "--background", "blur:2", "--no-history")
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    with Image.open(real) as im:
        assert im.format == "PNG"


def test_output_modes_follow_the_umask_and_an_existing_file_keeps_its_mode(tmp_path, photo, mask_png):
    keep = tmp_path / "keep.png"
    keep.write_bytes(b"x")
    keep.chmod(0o640)
    script = (f"import os, sys; os.umask(0o027); from core.cli import main; "
              f"sys.exit(main(sys.argv[1:]))")
    for out, want in ((tmp_path / "new.png", 0o640), (keep, 0o640)):
        proc = subprocess.run([sys.executable, "-c", script, "replace", str(photo), "--mask", str(mask_png),
                               "--out", str(out), "--background", "blur:2", "--no-history"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert stat.S_IMODE(out.stat().st_mode) == want, oct(out.stat().st_mode)
    keep.chmod(0o604)
    cli("replace", photo, "--mask", mask_png, "--out", keep, "--background", "blur:3", "--no-history")
    assert stat.S_IMODE(keep.stat().st_mode) == 0o604
    zip_out = tmp_path / "e.zip"
    record(open_store(), source=np.zeros((4, 4, 3), np.uint8), background="blur:1",
                            outputs=[np.zeros((4, 4, 3), np.uint8)])
    proc = subprocess.run([sys.executable, "-c", script.replace("0o027", "0o022"), "history", "export",
                           str(zip_out), "--ids", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(zip_out.stat().st_mode) == 0o644


def test_a_killed_writers_temp_file_is_removed_by_the_next_run(tmp_path, photo, mask_png):
    from core.files import HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "result.png"
    stale = tmp_path / f".result.png.backdrop-{HOST}-{dead.pid}-0123abcd.tmp"
    stale.write_bytes(b"\0" * 1000)                      # what a kill during the write leaves
    live = tmp_path / f".result.png.backdrop-{HOST}-{os.getpid()}-89abcdef.tmp"
    live.write_bytes(b"still being written")            # a writer that is alive: left alone
    foreign = tmp_path / ".result.png.x1y2z3.tmp"       # not named by us: never touched
    foreign.write_bytes(b"somebody else's")
    proc = cli("replace", photo, "--mask", mask_png, "--out", out, "--background", "blur:2", "--no-history")
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and live.exists() and foreign.exists() and out.is_file()


# ------------------------------------------------------------ 5. stale "running" rows in the app
def test_history_page_marks_a_dead_processes_run_failed(tmp_path, small):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/history.py").run()        # the server's store is open (and recovered)
    code = ("import numpy as np; from core.history import open_store; "
            "from core.spec import RunSpec, Generation; "
            "open_store().start_run(source=np.zeros((8, 8, 3), np.uint8), spec=RunSpec("
            "background='sd', generation=Generation(prompt='killed mid-run')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr        # that process has ended: its run never will
    (run,) = open_store().list_runs().runs          # the same store object: no new recovery
    assert run.status == "running"
    at.run()
    assert not at.exception
    (run,) = open_store().list_runs().runs
    assert run.status == "failed" and run.error.startswith("process stopped")


# ------------------------------------------------------------ 6. numbers out of range
@pytest.mark.parametrize("args", [
    ["history", "export", "x.zip", "--ids", "9223372036854775808"],
    ["history", "export", "x.zip", "--ids", "1,0"],
    ["history", "export", "x.zip", "--ids", "9" * 5000],
    ["history", "list", "--limit", str(10**20)],
    ["history", "list", "--limit", "9" * 5000],
    ["history", "list", "--limit", "0"],
    ["replace", "p.png", "--out", "o.png", "--point", "1,1", "--seed", "9" * 5000],
    ["replace", "p.png", "--out", "o.png", "--point", "1,1", "--steps", str(2**64)],
    ["replace", "p.png", "--out", "o.png", "--point", "1,1", "--guidance", "1e400"],
    ["replace", "p.png", "--out", "o.png", "--point", "1,1", "--grow", str(-10**30)],
    ["replace", "p.png", "--out", "o.png", "--point", "1,1", "--background", "blur:" + "9" * 5000],
])
def test_numbers_out_of_range_are_one_short_line(tmp_path, args):
    record(open_store(), source=np.zeros((4, 4, 3), np.uint8), background="blur:1")
    args = [str(tmp_path / a) if a.endswith((".zip", ".png")) else a for a in args]
    proc = cli(*args)
    line = one_line_error(proc, limit=320)
    assert "9" * 60 not in line


# ------------------------------------------------------------ 7. terminal output is escaped
def test_history_list_escapes_control_characters():
    store = open_store()
    record(store, source=np.zeros((4, 4, 3), np.uint8), background="sd",
                     prompt="\x1b[31mred\x1b[0m\rgone\x07 \u202eevil \x9b2J", model="m\x1b[2J")
    proc = cli("history", "list")
    assert proc.returncode == 0, proc.stderr
    for bad in ("\x1b", "\r", "\x07", "\u202e", "\x9b"):
        assert bad not in proc.stdout
    assert "\\x1b[31mred" in proc.stdout and "\\u202eevil" in proc.stdout
    listed = cli("history", "list", "--json")
    for bad in ("\x1b", "\r", "\x07", "\u202e", "\x9b"):
        assert bad not in listed.stdout
    import json
    assert json.loads(listed.stdout)[0]["prompt"] == "\x1b[31mred\x1b[0m\rgone\x07 \u202eevil \x9b2J"
