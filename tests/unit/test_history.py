"""History store on real files and a real database: round trip, dedupe, queries, delete, sweep,
migrations. Every test taking `store` or `history_url` runs twice: on SQLite (the default URL) and
on a fresh database of the session's PostgreSQL server (tests/conftest.py, marker `postgres`)."""
from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select, text

from core.errors import HistoryError, InvalidOptionError
from core.history import RunQuery, open_store
from core.history import db
from core.history.models import Base, Mask, Output, Run, Source
from core.spec import Click, Generation, MaskOptions, RunSpec, Subject
from core.images import content_hash
from runs import record, start

REPO = Path(__file__).resolve().parents[2]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for area in ("images", "thumbs") if (root / area).is_dir()
            for p in (root / area).rglob("*") if p.is_file()}


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture
def store(history_url):
    return open_store()


@pytest.fixture
def data_dir(store):
    return store.data_dir


def tint(rgb: np.ndarray, k: int) -> np.ndarray:
    """A different image per k (content-addressed storage keys on the bytes)."""
    return ((rgb.astype(np.uint16) + 7 * k) % 256).astype(np.uint8)


class Loaded:   # what core.images.LoadedImage offers the store: .rgb and .hash
    def __init__(self, rgb):
        self.rgb, self.hash = rgb, content_hash(rgb)


# ------------------------------------------------------------------------------ store basics --
def test_sqlite_engine_pragmas_and_default_location(tmp_path):
    store = open_store()
    assert store.url == f"sqlite:///{tmp_path / 'data' / 'history.db'}"
    assert (tmp_path / "data" / "history.db").is_file()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1   # NORMAL
    assert db.get_engine(store.url) is store.engine       # one engine per URL per process
    assert open_store() is store


def test_database_url_from_environment(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'h.sqlite'}"
    monkeypatch.setenv("BACKDROP_DATABASE_URL", url)
    s = open_store()
    assert s.url == url and (tmp_path / "elsewhere" / "h.sqlite").is_file()
    record(s, source=np.zeros((4, 5, 3), np.uint8), background="transparent")
    assert s.count_runs() == 1


def test_round_trip_every_field(store, chelsea):
    rgba = np.dstack([chelsea, np.full(chelsea.shape[:2], 128, np.uint8)])
    mask = np.zeros(chelsea.shape[:2], np.uint8)
    mask[50:200, 100:300] = 255
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    spec = RunSpec(
        subject=Subject(clicks=[Click(10.5, 20.25), Click(30, 40, 0)], box=(1, 2, 300, 250),
                        candidate=1, segmenter="sam-vit-b"),
        mask=MaskOptions(grow=3, feather=2, fill_holes=True, min_area=10),
        background="sd",
        generation=Generation(prompt="a beach at sunset", negative="blurry, lowres", seed=1234,
                              steps=30, guidance=7.5, strength=0.9, scheduler="dpm++",
                              model="sd15-inpainting", variants=2))
    rid = store.start_run(source=Loaded(chelsea), source_name="cat.jpg", spec=spec, created=created)
    assert store.get_run(rid).status == "running"
    store.finish_run(rid, mask=mask, outputs=[(tint(chelsea, 1), 1234), (rgba, 1235)],
                     timings={"mask": 0.25, "diffusion": 9.5}, device="cuda")
    r = store.get_run(rid)
    assert (r.id, r.status, r.created) == (rid, "succeeded", created)
    assert r.finished is not None and r.finished.tzinfo is not None and r.duration >= 0
    assert r.source_name == "cat.jpg" and r.spec == spec
    assert (r.device, r.error, r.prompt) == ("cuda", None, "a beach at sunset")
    assert r.timings == {"mask": 0.25, "diffusion": 9.5}
    # images come back bit-identical; thumbnails are small WebP
    assert (r.source.width, r.source.height, r.source.hash) == (451, 300, content_hash(chelsea))
    assert np.array_equal(read(r.source.path), chelsea)
    assert np.array_equal(read(r.mask.path), mask) and (r.mask.width, r.mask.height) == (451, 300)
    assert [(o.index, o.seed, o.favorite) for o in r.outputs] == [(0, 1234, False), (1, 1235, False)]
    assert np.array_equal(read(r.outputs[0].path), tint(chelsea, 1))
    assert np.array_equal(read(r.outputs[1].path), rgba)
    for o in r.outputs:
        assert (o.width, o.height) == (451, 300)
        with Image.open(o.thumb_path) as th:
            assert th.format == "WEBP" and max(th.size) == 256
    with Image.open(r.outputs[1].thumb_path) as th:
        assert th.mode == "RGBA"
    d = r.to_dict()
    assert d["created"] == created.isoformat() and d["outputs"][1]["seed"] == 1235
    assert RunSpec.from_json(d["spec"]) == spec
    assert isinstance(d["source"]["path"], str)


def test_record_run_and_failures(store, coffee):
    rid = record(store, source=coffee, background="color:#00ff00", outputs=[coffee],
                           timings={"compose": 0.5})
    r = store.get_run(rid)
    assert (r.status, r.spec.background.kind, r.duration, r.mask, r.prompt) == (
        "succeeded", "color", 0.5, None, None)
    rid2 = start(store, source=coffee, background="sd", prompt="x")
    store.fail_run(rid2, "CUDA out of memory", timings={"load": 1.0})
    rid3 = start(store, source=coffee, background="sd", prompt="x")
    store.fail_run(rid3, "cancelled by the user", status="cancelled")
    assert store.get_run(rid2).status == "failed" and store.get_run(rid2).error == "CUDA out of memory"
    assert store.get_run(rid3).status == "cancelled"
    with pytest.raises(HistoryError, match="no run with id 999"):
        store.get_run(999)
    with pytest.raises(HistoryError):
        store.finish_run(999, outputs=[coffee])
    with pytest.raises(InvalidOptionError):
        record(store, source=coffee.astype(np.float32), background="blur:5")
    with pytest.raises(InvalidOptionError):
        store.fail_run(rid2, "x", status="succeeded")
    with pytest.raises(HistoryError, match="no source image"):
        start(store, source="0" * 64, background="blur:5")


def test_source_stored_once_however_often_used(store, astronaut, data_dir):
    a = record(store, source=astronaut, background="blur:9")
    b = start(store, source=Loaded(astronaut), background="transparent")   # hash supplied
    c = record(store, source=content_hash(astronaut), background="color:#000000")  # hash only
    runs = store.get_runs([a, b, c])
    assert len({r.source.id for r in runs}) == 1
    with store.database.read() as s:
        assert s.scalar(select(func.count(Source.id))) == 1
    assert files_under(data_dir) == {
        f"images/{runs[0].source.hash[:2]}/{runs[0].source.hash}.png",
        f"thumbs/{runs[0].source.hash[:2]}/{runs[0].source.hash}.webp"}
    # identical outputs and masks are content-addressed too
    m = np.zeros(astronaut.shape[:2], np.uint8)
    store.finish_run(b, mask=m, outputs=[astronaut, astronaut])
    r = store.get_run(b)
    assert r.outputs[0].path == r.outputs[1].path == r.source.path
    assert len(files_under(data_dir)) == 3   # source png + thumb, mask png


# ------------------------------------------------------------------------------------ queries --
COLOUR_RUNS = (7, 15)     # the rest of _fill's runs are painted (prompt, model, seed)


def _fill(store, n=23):
    base = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    src = np.zeros((8, 8, 3), np.uint8)
    ids = []
    for i in range(n):
        created = base + timedelta(minutes=i // 3)   # groups of 3 share a timestamp: id breaks ties
        ids.append(record(store, 
            source=src, created=created, outputs=[np.full((8, 8, 3), i, np.uint8)],
            **(dict(background=f"color:#0000{i:02x}") if i in COLOUR_RUNS else dict(
                background="sd", prompt=f"prompt {i} {'sunset' if i % 4 == 0 else 'forest'}",
                negative="ugly", model="sdxl" if i % 3 == 0 else "sd15", seed=i, steps=20))))
    return ids


def test_keyset_and_offset_pagination_have_no_gaps_or_duplicates(store):
    ids = _fill(store)
    expected = [r.id for r in store.iter_runs()]
    assert sorted(expected) == sorted(ids) and len(expected) == 23
    created = [store.get_run(i).created for i in expected]
    assert created == sorted(created, reverse=True)
    seen, cursor = [], None
    while True:
        page = store.list_runs(limit=5, cursor=cursor)
        seen += [r.id for r in page.runs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        if len(seen) == 10:   # a run recorded while paging must not shift the pages
            record(store, source=np.zeros((8, 8, 3), np.uint8), background="blur:1")
    assert seen == expected
    by_offset = [r.id for k in range(0, 25, 5) for r in store.list_runs(limit=5, offset=k).runs]
    assert by_offset[1:] == expected and len(by_offset) == 24
    assert store.list_runs(limit=100).next_cursor is None
    with pytest.raises(InvalidOptionError):
        store.list_runs(cursor="garbage")


def test_search_filters_and_count(store):
    ids = _fill(store)
    sunset = store.list_runs(RunQuery(text="SUNSET"), limit=100).runs
    assert {r.id for r in sunset} == {ids[i] for i in range(23) if i % 4 == 0}
    assert store.count_runs(RunQuery(text="sunset")) == len(sunset)
    assert store.count_runs(RunQuery(text="ugly")) == 21            # negative prompt is searched
    words_and = {ids[i] for i in range(23)          # every word must match
                 if "1" in str(i) and i % 4 and i not in COLOUR_RUNS}
    assert {r.id for r in store.list_runs(RunQuery(text="prompt 1 forest"), limit=100).runs} == words_and
    assert store.count_runs(RunQuery(model="sdxl")) == 7
    assert store.count_runs(RunQuery(background_kind="color")) == 2
    assert store.count_runs(RunQuery(status="succeeded")) == 23
    assert store.count_runs(RunQuery(status=["failed", "cancelled"])) == 0
    since = datetime(2026, 3, 1, 12, 2, tzinfo=timezone.utc)
    until = datetime(2026, 3, 1, 12, 4, tzinfo=timezone.utc)
    in_range = store.list_runs(RunQuery(since=since, until=until), limit=100).runs
    assert sorted(r.id for r in in_range) == ids[6:12]
    assert store.count_runs(RunQuery(since=since.replace(tzinfo=None), until=until)) == 6
    assert store.count_runs(RunQuery(favorites=True)) == 0
    fav = store.get_run(ids[5]).outputs[0]
    store.set_favorite(fav.id)
    assert [r.id for r in store.list_runs(RunQuery(favorites=True)).runs] == [ids[5]]
    assert store.get_run(ids[5]).favorite
    store.set_favorite(fav.id, False)
    assert store.count_runs(RunQuery(favorites=True)) == 0
    with pytest.raises(HistoryError):
        store.set_favorite(10_000)
    combined = RunQuery(text="forest", model="sd15", background_kind="sd")
    assert all(r.spec.generation.model == "sd15" and "forest" in r.prompt
               for r in store.list_runs(combined, limit=100).runs)
    assert store.facets() == {"model": ["sd15", "sdxl"], "background_kind": ["color", "sd"],
                              "status": ["succeeded"]}


def test_search_treats_wildcards_literally_and_folds_unicode(store):
    src = np.zeros((4, 4, 3), np.uint8)
    a = record(store, source=src, background="sd", prompt="100% cotton_field")
    b = record(store, source=src, background="sd", prompt="1000 cottonXfield")
    c = record(store, source=src, background="sd", prompt="Straße in ÜBERLINGEN",
                         negative=r"back\slash")
    q = lambda t: {r.id for r in store.list_runs(RunQuery(text=t)).runs}   # noqa: E731
    assert q("100%") == {a} and q("cotton_field") == {a} and q("%") == {a} and q("_") == {a}
    assert q("1000") == {b} and q("überlingen") == {c} and q("STRASSE") == {c}
    assert q("back\\slash") == {c} and q("") == {a, b, c} and q("nothing-like-this") == set()


def test_batch_filter_lists_one_batch_and_combines_with_search_and_favourites(store):
    """A batch's runs (recorded with their batch's name, as core.batch records them) are found by
    the batch's name; batches() counts each batch, the most recent first; single photos are in
    none, whatever their source name says."""
    src = np.zeros((4, 4, 3), np.uint8)
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    at = lambda k: t0 + timedelta(minutes=k)   # noqa: E731
    shots = [record(store, source=tint(src, k), background="sd", prompt=f"shot {k}", batch="shots",
                    source_name=f"shots/{k}.jpg", outputs=[tint(src, k)], created=at(k)) for k in range(3)]
    mug = record(store, source=src, background="sd", prompt="shot mug", source_name="mugs/mug.png",
                 batch="mugs", outputs=[src], created=at(5))
    nested = record(store, source=src, source_name="2026/march/a.jpg", batch="2026/march", created=at(6))
    single = record(store, source=src, background="sd", prompt="shot alone", source_name="alone.jpg",
                    created=at(7))
    odd = record(store, source=src, source_name="shots/odd.jpg", created=at(8))   # a "/" is no batch
    assert store.batches() == [("2026/march", 1), ("mugs", 1), ("shots", 3)]
    ids = lambda q: [r.id for r in store.list_runs(q, limit=100).runs]   # noqa: E731
    assert ids(RunQuery(batch="shots")) == shots[::-1] and store.count_runs(RunQuery(batch="shots")) == 3
    assert ids(RunQuery(batch="2026/march")) == [nested]
    assert ids(RunQuery(batch="shot")) == [] and ids(RunQuery(batch="SHOTS")) == []   # the exact name
    assert set(ids(RunQuery())) == {*shots, mug, nested, single, odd}     # no batch: every run
    assert ids(RunQuery(text="shot", batch="shots")) == shots[::-1]
    assert ids(RunQuery(text="shot 1", batch="shots")) == [shots[1]]
    store.set_favorite(store.get_run(shots[2]).outputs[0].id)
    store.set_favorite(store.get_run(mug).outputs[0].id)
    assert ids(RunQuery(favorites=True, batch="shots")) == [shots[2]]
    assert [store.get_run(i).batch for i in (shots[0], mug, nested, single, odd)] == [
        "shots", "mugs", "2026/march", None, None]
    assert store.get_run(mug).summary()["batch"] == "mugs"
    store.delete_run(mug)
    assert store.batches() == [("2026/march", 1), ("shots", 3)]


def test_migration_puts_existing_batch_runs_in_their_batch(history_url):
    """A database from before revision 0005: its batch runs (source name "<batch>/<file>") land in
    their batch, every other value of every run is kept."""
    engine = db.get_engine(history_url)
    db.upgrade(engine, "0004")
    names = {1: "shots/a.jpg", 2: "shots/b.jpg", 3: "one photo.jpg", 4: "summer sale/c.png", 5: ""}
    with engine.begin() as conn:   # rows as a rev-0004 build of Backdrop wrote them
        conn.execute(text("INSERT INTO sources (id, hash, width, height, path, thumb_path, created) "
                          "VALUES (1, :h, 4, 3, :p, :t, '2026-01-01 10:00:00.000000')"),
                     {"h": "a" * 64, "p": f"images/aa/{'a' * 64}.png", "t": f"thumbs/aa/{'a' * 64}.webp"})
        for rid, name in names.items():
            conn.execute(text(
                "INSERT INTO runs (id, created, status, owner, source_id, source_name, spec, "
                "background_kind, model, timings, search_text) VALUES (:id, :created, 'succeeded', '', 1, "
                ":name, :spec, 'color', NULL, '{\"mask\": 0.5}', '')"),
                {"id": rid, "created": f"2026-01-01 10:00:0{rid}.000000", "name": name,
                 "spec": '{"version": 1, "background": "color:#ffffff"}'})
    s = open_store(sweep=False)
    assert db.current_revision(s.engine) == "0005"
    runs = {r.id: r for r in s.iter_runs()}
    assert {i: r.source_name for i, r in runs.items()} == names          # nothing lost
    assert all(r.timings == {"mask": 0.5} and str(r.spec.background) == "color:#ffffff"
               for r in runs.values())
    assert s.batches() == [("summer sale", 1), ("shots", 2)]
    assert [r.id for r in s.list_runs(RunQuery(batch="shots")).runs] == [2, 1]
    assert s.count_runs() == 5


def test_compare_lists_params_side_by_side_with_differences(store, coffee):
    common = dict(background="sd", prompt="a red barn", negative="", steps=30, guidance=7.5,
                  model="sd15", clicks=[(5, 5, 1)])
    a = record(store, source=coffee, seed=1, outputs=[(coffee, 1)], **common)
    b = record(store, source=coffee, seed=2, outputs=[(coffee, 2)], **common | {"steps": 50})
    cmp = store.compare([a, b])
    assert cmp.ids == (a, b)
    assert set(cmp.differing) == {"generation.seed", "generation.steps", "output_seeds"}
    assert cmp.params["generation.steps"] == (30, 50)
    assert cmp.params["generation.prompt"] == ("a red barn",) * 2
    assert store.compare([a, a]).differing == ()
    with pytest.raises(HistoryError):
        store.compare([a, 424242])


# ------------------------------------------------------------------------------------- delete --
def test_delete_removes_unshared_files_and_keeps_shared(store, astronaut, data_dir):
    shared_out = tint(astronaut, 3)
    mask_a = np.zeros(astronaut.shape[:2], np.uint8)
    mask_b = mask_a.copy()
    mask_b[:10] = 255
    a = record(store, source=astronaut, mask=mask_a, outputs=[shared_out, tint(astronaut, 4)],
                         background="blur:3")
    b = record(store, source=astronaut, mask=mask_b, outputs=[shared_out], background="blur:3")
    ra, rb = store.get_runs([a, b])
    assert store.delete_run(a) == 3          # a's own mask png, unshared output png + thumb
    assert not ra.mask.path.exists() and not ra.outputs[1].path.exists()
    assert not ra.outputs[1].thumb_path.exists()
    for p in (rb.source.path, rb.source.thumb_path, rb.mask.path, rb.outputs[0].path,
              rb.outputs[0].thumb_path):
        assert p.exists()
    assert store.get_run(b).outputs[0].path == ra.outputs[0].path
    with pytest.raises(HistoryError):
        store.get_run(a)
    store.delete_run(b)
    assert files_under(data_dir) == set()
    with store.database.read() as s:
        assert [s.scalar(select(func.count(m.id))) for m in (Run, Output, Source, Mask)] == [0] * 4
    with pytest.raises(HistoryError):
        store.delete_run(b)


# -------------------------------------------------------------------------------------- sweep --
def test_sweep_removes_old_orphans_only(store, coffee, data_dir):
    rid = record(store, source=coffee, outputs=[tint(coffee, 1)], background="blur:2")
    kept = files_under(data_dir)
    orphan = store.blobs.prepare(tint(coffee, 2), thumb=True)           # as if a writer died
    tmp = data_dir / "images" / "ab" / ".abc.png.x1y2.tmp"              # a half-written temp file
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(b"partial")
    foreign = data_dir / "images" / "README.txt"                        # not ours: never touched
    foreign.write_text("keep me")
    report = store.sweep()                                   # default grace: all too young
    assert report.removed_files == 0 and (data_dir / orphan.path).exists()
    report = store.sweep(grace_s=0)
    assert report.removed_files == 3 and report.missing_files == 0 and report.removed_bytes > 0
    assert files_under(data_dir) == kept | {"images/README.txt"}
    assert np.array_equal(read(store.get_run(rid).outputs[0].path), tint(coffee, 1))
    # an image reused by a new row has its claim refreshed, so the grace period protects it again
    old = time.time() - 7200
    blob = store.blobs.prepare(tint(coffee, 2), thumb=True)
    claim = data_dir / "refs" / store.store_id / blob.digest[:2] / blob.digest
    os.utime(claim, (old, old))
    store.blobs.prepare(tint(coffee, 2), thumb=True)
    assert claim.stat().st_mtime > old + 3600
    assert store.sweep().removed_files == 0 and (data_dir / blob.path).exists()
    # a row whose file vanished is reported
    store.get_run(rid).outputs[0].thumb_path.unlink()
    assert store.sweep(grace_s=3600).missing_files == 1


def test_sweep_leaves_runs_of_live_processes_alone(store, coffee):
    rid = start(store, source=coffee, background="sd", prompt="still going")
    assert store.sweep(grace_s=0).interrupted == 0
    assert store.get_run(rid).status == "running"
    assert store.sweep(grace_s=0, stale_after_s=-1).interrupted == 1   # too old: given up on
    r = store.get_run(rid)
    assert r.status == "failed" and r.error.startswith("process stopped")


# --------------------------------------------------------------------------------- migrations --
def test_migration_from_empty_database_matches_models(history_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    s = open_store()
    assert db.current_revision(s.engine) == db.head_revision() == "0005"
    with s.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_migration_from_previous_revision_keeps_data(history_url):
    engine = db.get_engine(history_url)
    db.upgrade(engine, "0001")
    assert db.current_revision(engine) == "0001"
    with engine.begin() as conn:   # rows as a rev-0001 build of Backdrop wrote them
        conn.execute(text("INSERT INTO sources (id, hash, width, height, path, thumb_path, created) "
                          "VALUES (1, :h, 4, 3, :p, :t, '2026-01-01 10:00:00.000000')"),
                     {"h": "a" * 64, "p": f"images/aa/{'a' * 64}.png",
                      "t": f"thumbs/aa/{'a' * 64}.webp"})
        conn.execute(text(
            "INSERT INTO runs (id, created, status, owner, source_id, source_name, clicks, "
            "mask_options, background, background_kind, prompt, negative, seed, variants, timings) "
            "VALUES (7, '2026-01-01 10:00:00.000000', 'succeeded', '', 1, 'old.jpg', '[[1.0, 2.0, 1]]',"
            " '{\"grow\": 2}', 'sd', 'sd', 'Ünïcode SUNSET', 'Blurry', 42, 1, '{\"diffusion\": 3.0}')"))
        conn.execute(text("INSERT INTO outputs (id, run_id, \"index\", seed, favorite, hash, path, "
                          "thumb_path, width, height) VALUES (3, 7, 0, 42, TRUE, :h, :p, :t, 4, 3)"),
                     {"h": "b" * 64, "p": f"images/bb/{'b' * 64}.png",
                      "t": f"thumbs/bb/{'b' * 64}.webp"})
    s = open_store(sweep=False)
    assert db.current_revision(s.engine) == "0005"
    r = s.get_run(7)
    gen = r.spec.generation
    assert (gen.prompt, gen.negative, gen.seed, r.source_name, r.spec.subject.clicks) == (
        "Ünïcode SUNSET", "Blurry", 42, "old.jpg", (Click(1.0, 2.0, 1),))
    assert r.spec.mask.grow == 2 and r.timings == {"diffusion": 3.0}
    assert r.outputs[0].favorite and r.outputs[0].id == 3
    assert [x.id for x in s.list_runs(RunQuery(text="ünïcode sunset", favorites=True)).runs] == [7]
    assert s.count_runs(RunQuery(text="blurry")) == 1


def test_downgrade_and_upgrade_again(history_url):
    from alembic import command

    s = open_store()
    record(s, source=np.zeros((4, 4, 3), np.uint8), background="sd", prompt="kept")
    cfg = db.alembic_config()
    with db.write_engine(s.engine).connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert db.current_revision(s.engine) == "0001"
    db.upgrade(s.engine)
    assert s.count_runs(RunQuery(text="KEPT")) == 1


def test_database_from_a_newer_backdrop_is_a_clear_error(history_url):
    engine = db.get_engine(history_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    db._migrated.clear()
    with pytest.raises(HistoryError, match="newer than this Backdrop"):
        open_store()
