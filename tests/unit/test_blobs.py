"""The image store behind the history (core/history/blobs.py): the same history operations on a
folder and on S3 (a real local S3 server: moto's ThreadedMotoServer, one per session, a fresh
bucket per test), written once per content hash, a failed upload leaves no row pointing at
nothing, another database's claims are respected, and embedded mode is the folder as before."""
from __future__ import annotations

import io
import socket
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import HistoryError
from core.history import HistoryStore, open_store
from core.history.blobs import FolderBackend, S3Backend, image_rel, thumb_rel
from core.images import encode_png
from runs import record, start

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ fixtures --
# s3_server, s3_env and s3_url: tests/conftest.py (one S3 server for the whole session)
@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.s3)])
def blob_url(request, tmp_path, monkeypatch):
    """BACKDROP_BLOB_URL for each backend: a shared folder (outside the data dir), or S3."""
    url = str(tmp_path / "shared") if request.param == "folder" else request.getfixturevalue("s3_url")
    monkeypatch.setenv("BACKDROP_BLOB_URL", url)
    return url


def make_store(tmp_path: Path, name: str = "a") -> HistoryStore:
    """A history in its own SQLite file over the BACKDROP_BLOB_URL image store."""
    return HistoryStore(f"sqlite:///{tmp_path / f'{name}.db'}", tmp_path / "data")


def objects(store: HistoryStore) -> set[str]:
    """The store's image files (images/, thumbs/), as store-relative names."""
    return {rel for rel, _mtime, _size in store.blobs.walk()}


def picture(seed: int, shape=(40, 56, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# --------------------------------------------------------------------- the same on both stores --
def test_record_read_export_round_trip(blob_url, tmp_path):
    store = make_store(tmp_path)
    src, out1 = picture(1), picture(2)
    out2 = picture(3, (40, 56, 4))                      # RGBA: transparent background
    mask = np.zeros(src.shape[:2], np.uint8)
    mask[10:30, 10:40] = 255
    rid = record(store, source=src, mask=mask, outputs=[(out1, 7), (out2, 8)], background="sd",
                 prompt="a beach at sunset")
    run = store.get_run(rid)

    if blob_url.startswith("s3://"):
        assert isinstance(store.blobs.backend, S3Backend)
        assert str(run.outputs[0].path) == f"{blob_url}/{image_rel(run.outputs[0].hash)}"
        assert not (tmp_path / "data" / "images").exists()          # nothing in the data dir
    else:
        assert run.outputs[0].path == Path(blob_url) / image_rel(run.outputs[0].hash)
        assert run.outputs[0].path.is_file()
    assert objects(store) == {image_rel(h) for h in (run.source.hash, run.mask.hash,
                                                      *(o.hash for o in run.outputs))} \
        | {thumb_rel(h) for h in (run.source.hash, *(o.hash for o in run.outputs))}

    # read back through the store: full size, thumbnails, the card pictures of the History page
    assert np.array_equal(decode(store.read_file(run.source.path)), src)
    assert np.array_equal(decode(store.read_file(run.mask.path)), mask)
    assert np.array_equal(decode(store.read_file(run.outputs[0].path)), out1)
    assert np.array_equal(decode(store.read_file(run.outputs[1].path)), out2)
    thumb = decode(store.read_file(run.outputs[1].thumb_path))
    assert thumb.shape == (40, 56, 4)                                # WebP, alpha kept
    assert store.has_file(run.source.thumb_path)
    from ui import history as uh
    pics = uh.thumbnails(store, [run])
    assert pics[rid] == store.read_file(run.outputs[0].thumb_path)
    assert uh.mask_preview(store.read_file(run.mask.path))[:8] == b"\x89PNG\r\n\x1a\n"

    # favourites zip: the PNG comes out of the store with its parameters chunk
    from core.export import export_runs
    store.set_favorite(run.outputs[1].id)
    result = export_runs(tmp_path / "fav.zip", favorites=True, store=store)
    assert (result.runs, result.outputs, result.masks) == (1, 1, 1)
    with zipfile.ZipFile(tmp_path / "fav.zip") as z:
        name = next(n for n in z.namelist() if n.startswith("outputs/"))
        with Image.open(io.BytesIO(z.read(name))) as im:
            assert "a beach at sunset" in im.info["parameters"]
            assert np.array_equal(np.asarray(im), out2)
        assert np.array_equal(decode(z.read(f"masks/run-{rid:06d}-mask.png")), mask)


def test_delete_takes_only_unclaimed_images(blob_url, tmp_path):
    """Two databases on one image store: deleting a run removes the images only it used and
    keeps the ones the other database claims."""
    a, b = make_store(tmp_path, "a"), make_store(tmp_path, "b")
    shared, only_a, only_b = picture(10), picture(11), picture(12)
    ra = record(a, source=shared, outputs=[only_a])
    rb = record(b, source=shared, outputs=[only_b])
    run_a, run_b = a.get_run(ra), b.get_run(rb)
    assert a.store_id != b.store_id

    assert a.delete_run(ra) == 2                                   # only_a's PNG + thumbnail
    left = objects(a)
    assert image_rel(run_a.outputs[0].hash) not in left and thumb_rel(run_a.outputs[0].hash) not in left
    assert {image_rel(shared_h := run_b.source.hash), thumb_rel(shared_h),
            image_rel(run_b.outputs[0].hash)} <= left
    assert np.array_equal(decode(b.read_file(b.get_run(rb).source.path)), shared)
    with pytest.raises(HistoryError, match="missing"):
        a.read_file(run_a.outputs[0].path)

    b.delete_run(rb)
    assert objects(b) == set()
    assert a.sweep().missing_files == b.sweep().missing_files == 0


def test_sweep_removes_orphans_keeps_foreign_and_counts_missing(blob_url, tmp_path):
    store = make_store(tmp_path)
    rid = record(store, source=picture(20), outputs=[picture(21)])
    kept = objects(store)
    orphan = store.blobs.prepare(picture(22), thumb=True)           # a writer died before its row
    store.blobs.write("images/README.txt", b"not ours")             # another tool's file
    assert store.sweep().removed_files == 0 and store.blobs.exists(orphan.path)   # grace period
    report = store.sweep(grace_s=0)
    assert report.removed_files == 2 and report.missing_files == 0
    assert objects(store) == kept | {"images/README.txt"}
    store.blobs.remove(thumb_rel(store.get_run(rid).outputs[0].hash))   # lost behind our back
    assert store.sweep(grace_s=0).missing_files == 1


def test_same_content_is_one_object_written_once(blob_url, tmp_path):
    a, b = make_store(tmp_path, "a"), make_store(tmp_path, "b")
    src, out = picture(30), picture(31)
    record(a, source=src, outputs=[out])
    first = {rel: store_stat(a, rel) for rel in objects(a)}
    puts = count_puts(a)
    record(a, source=src, outputs=[out, out])                      # the same images again
    record(b, source=src, outputs=[out])                           # ... from another database
    assert {rel: store_stat(a, rel) for rel in objects(a)} == first   # nothing rewritten
    if puts is not None:
        assert puts and [k for k in puts if "/refs/" not in k] == []    # only claims were PUT
    # two writers racing on the same new content: one object, the second PUT declined
    data = encode_png(picture(32))
    rel = image_rel("f" * 64)
    assert a.blobs.backend.put(rel, data, once=True) is True
    if isinstance(a.blobs.backend, S3Backend):
        before = store_stat(a, rel)
        assert a.blobs.backend.put(rel, b"other bytes", once=True) is False
        assert store_stat(a, rel) == before and a.blobs.read(rel) == data


@pytest.mark.s3
def test_s3_server_without_conditional_put(s3_url, monkeypatch, tmp_path):
    """An S3-compatible server that answers If-None-Match with 501 still gets each image once
    (the HEAD before the PUT), by plain PUTs."""
    from botocore.exceptions import ClientError
    monkeypatch.setenv("BACKDROP_BLOB_URL", s3_url)
    store = make_store(tmp_path)
    client = store.blobs.backend.client
    real_put = client.put_object

    def old_server_put(**kw):
        if "IfNoneMatch" in kw:
            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "not here"}}, "PutObject")
        return real_put(**kw)

    monkeypatch.setattr(client, "put_object", old_server_put)
    puts = count_puts(store)
    rid = record(store, source=picture(90), outputs=[picture(91)])
    assert len([k for k in puts if "/refs/" not in k]) == 4        # 2 PNGs + 2 thumbnails
    assert store.blobs.backend._conditional is False
    record(store, source=picture(90), outputs=[picture(91)])
    assert len([k for k in puts if "/refs/" not in k]) == 4        # nothing uploaded again
    assert np.array_equal(decode(store.read_file(store.get_run(rid).outputs[0].path)), picture(91))


def store_stat(store: HistoryStore, rel: str):
    backend = store.blobs.backend
    if isinstance(backend, S3Backend):
        head = backend.client.head_object(Bucket=backend.bucket, Key=backend.key(rel))
        return head["ETag"], head["LastModified"]
    st = backend.abs(rel).stat()
    return st.st_ino, st.st_mtime_ns


def count_puts(store: HistoryStore):
    """A list that collects the key of every PutObject the store's S3 client sends (None on a
    folder)."""
    backend = store.blobs.backend
    if not isinstance(backend, S3Backend):
        return None
    keys: list[str] = []
    backend.client.meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: keys.append("/" + params["Key"]))
    return keys


# ---------------------------------------------------------------------------- S3 failures --
@pytest.mark.s3
def test_missing_bucket_fails_in_one_line_with_no_row(s3_url, monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDROP_BLOB_URL", f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x")
    store = make_store(tmp_path)
    with pytest.raises(HistoryError) as e:
        record(store, source=picture(40), outputs=[picture(41)])
    assert "does not exist" in one_line(e.value) and "no-such-bucket" in str(e.value)
    assert store.count_runs() == 0


@pytest.mark.s3
def test_failed_upload_leaves_no_row_pointing_at_nothing(s3_url, monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDROP_BLOB_URL", s3_url)
    store = make_store(tmp_path)
    client = store.blobs.backend.client
    real_put = client.put_object
    out = picture(51)

    def flaky_put(**kw):
        if kw["Key"].endswith(".png") and kw["Body"] == encode_png(out):
            from botocore.exceptions import ClientError
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}},
                              "PutObject")
        return real_put(**kw)

    monkeypatch.setattr(client, "put_object", flaky_put)
    with pytest.raises(HistoryError) as e:
        record(store, source=picture(50), outputs=[out])
    assert "cannot upload" in one_line(e.value) and "SlowDown" in str(e.value)
    assert store.count_runs() == 0

    rid = start(store, source=picture(50))                   # the two-step way (core.jobs)
    with pytest.raises(HistoryError):
        store.finish_run(rid, outputs=[out])
    run = store.get_run(rid)
    assert run.status == "running" and run.outputs == ()        # no row for the lost output
    for path in (run.source.path, run.source.thumb_path):
        assert store.has_file(path)
    monkeypatch.setattr(client, "put_object", real_put)
    store.finish_run(rid, outputs=[out])                        # the store is back: it works
    assert np.array_equal(decode(store.read_file(store.get_run(rid).outputs[0].path)), out)


@pytest.mark.s3
def test_stopped_server_fails_in_one_line_with_no_row(s3_server, s3_env, monkeypatch, tmp_path):
    """An S3 server that goes away between two runs: the next run fails with one line naming
    the store, and no row is written."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3_env(f"http://{host}:{port}")
    bucket = f"gone-soon-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket=bucket)
    monkeypatch.setenv("BACKDROP_BLOB_URL", f"s3://{bucket}/p")
    store = make_store(tmp_path)
    record(store, source=picture(60), outputs=[picture(61)])
    server.stop()
    with pytest.raises(HistoryError) as e:
        record(store, source=picture(62), outputs=[picture(63)])
    assert one_line(e.value).startswith(f"image store s3://{bucket}/p: cannot")
    assert store.count_runs() == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.s3
def test_history_page_shows_pictures_from_s3(s3_url, monkeypatch, astronaut):
    """The History page (AppTest) with the images in S3: the grid, a run's detail with its source
    and mask, and edit-from-here loading the photo back."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("BACKDROP_BLOB_URL", s3_url)
    store = open_store()
    small = astronaut[::8, ::8].copy()
    mask = np.zeros(small.shape[:2], np.uint8)
    mask[16:48, 16:48] = 255
    rid = record(store, source=small, source_name="s3 photo.png", mask=mask,
                 outputs=[(small[:, ::-1].copy(), 5)])
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/history.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    at.button(key=f"open-{rid}").click().run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    captions = [c for img in at.image for c in img.captions]
    assert "Source" in captions and "Mask (white = subject)" in captions

    from ui import history as uh
    state: dict = {}
    uh.load_into_editor(state, store.get_run(rid), store)
    assert state["photo"].hash == store.get_run(rid).source.hash


@pytest.mark.s3
def test_team_setup_postgres_history_and_s3_images(pg_url, s3_url, monkeypatch, tmp_path):
    """Two app servers (separate data dirs) over one PostgreSQL history and one bucket: what one
    records the other reads, exports and deletes; the images go with the last run using them."""
    monkeypatch.setenv("BACKDROP_BLOB_URL", s3_url)
    one = HistoryStore(pg_url, tmp_path / "server1")
    two = HistoryStore(pg_url, tmp_path / "server2")
    assert one.store_id == two.store_id
    src, out = picture(80), picture(81)
    r1 = record(one, source=src, outputs=[(out, 1)])
    r2 = record(two, source=src, outputs=[(picture(82), 2)])
    run = two.get_run(r1)
    assert np.array_equal(decode(two.read_file(run.outputs[0].path)), out)
    from core.export import export_runs
    assert export_runs(tmp_path / "all.zip", store=two).outputs == 2
    two.delete_run(r1)
    assert one.has_file(one.get_run(r2).source.path)          # still used by run r2
    assert not one.has_file(run.outputs[0].path)
    one.delete_run(r2)
    assert objects(one) == set()
    assert not any(p.is_dir() for p in (tmp_path / "server1", tmp_path / "server2"))


# ------------------------------------------------------------------------- embedded mode --
def test_embedded_mode_is_the_data_dir_as_before(tmp_path, monkeypatch):
    """No BACKDROP_BLOB_URL: the data dir, the same layout and bytes as always (and boto3 is never
    imported: tests/integration/test_fresh_process.py)."""
    monkeypatch.delenv("BACKDROP_BLOB_URL", raising=False)
    store = open_store()
    data = tmp_path / "data"
    assert isinstance(store.blobs.backend, FolderBackend) and store.blobs.root == data
    src, out = picture(70), picture(71)
    rid = record(store, source=src, outputs=[out])
    run = store.get_run(rid)
    files = {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()}
    s, o = run.source.hash, run.outputs[0].hash
    assert files == {"history.db", "refs/.lock", image_rel(s), thumb_rel(s), image_rel(o),
                     thumb_rel(o), f"refs/{store.store_id}/{s[:2]}/{s}",
                     f"refs/{store.store_id}/{o[:2]}/{o}",
                     f"refs/{store.store_id}/.store"} | {f for f in files if f.startswith("history.db-")}
    assert run.source.path == data / image_rel(s) and run.outputs[0].thumb_path == data / thumb_rel(o)
    assert (data / image_rel(o)).read_bytes() == encode_png(out)


def test_bad_blob_url_is_one_line(monkeypatch, tmp_path):
    from core.errors import InvalidOptionError
    monkeypatch.setenv("BACKDROP_BLOB_URL", "ftp://somewhere/x")
    with pytest.raises(InvalidOptionError) as e:
        make_store(tmp_path)
    assert "s3://bucket/prefix" in one_line(e.value)


def test_cli_never_writes_into_a_folder_image_store(monkeypatch, tmp_path):
    """The CLI refuses outputs inside the image store's folders wherever BACKDROP_BLOB_URL puts
    them (as it does for the data dir's)."""
    from core import cli
    monkeypatch.setenv("BACKDROP_BLOB_URL", str(tmp_path / "shared"))
    protected = cli._protected()
    assert tmp_path / "shared" / "images" in protected and tmp_path / "data" / "refs" in protected
    monkeypatch.setenv("BACKDROP_BLOB_URL", "s3://bucket/prefix")
    assert not any("bucket" in str(p) for p in cli._protected())
