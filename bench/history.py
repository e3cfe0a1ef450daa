"""History store benchmark: listing/search speed and storage per run on a 10 000-run history, and a
multi-process write stress test on one database.

    python bench/history.py [--runs 10000] [--distinct 400] [--stress] [--procs 8] [--per-proc 50]
                            [--postgres [--postgres-only]] [--database-url URL]

Backends: SQLite (the default, a file in the temp data dir); --postgres also runs everything on a
throwaway PostgreSQL server started for the run (tests/kit/pg.py: initdb + pg_ctl in a temp folder,
as `nobody` when run as root, durable settings: fsync on), same fill, same seed, after SQLite;
--postgres-only skips SQLite; --database-url URL runs on that (empty) database instead of SQLite.
On PostgreSQL the tables are VACUUM ANALYZEd after the fill (what autovacuum does in a
deployment) before anything is timed.

Fill: a fresh data dir in a temp folder; every run goes through HistoryStore.record_run (files
written, thumbnails made, one transaction per run, exactly as in production). Images are real photos
from skimage.data (astronaut, chelsea, coffee, camera): 24 source photos (384x288 crops) and, for the
first --distinct runs, new 384x288 outputs (crops + tints) and masks; later runs REUSE those arrays,
so their files are deduplicated by content address (this keeps the fill to a minute or two and the
disk use small; the "data per run if unique" figure extrapolates from the distinct runs).
~25% of SD runs have 2 variants, ~8% of runs failed/cancelled (no outputs), ~5% outputs favourite.

Reported: time to get the newest page of 48 runs AND read the 48 thumbnails' bytes (target
<= 100 ms), a deep page by keyset cursor and by offset, a favourites page, text search (page + count),
DB bytes per run, data/ bytes per run. Times are with a warm OS file cache (files were just
written) on a shared machine: other processes inflate them.

--stress: N processes x M runs each (start_run + finish_run, two transactions per run like
core.jobs; every run writes a new output PNG + WebP thumbnail + mask PNG), all released at once on
one database (images are generated before the start signal, so the timing is the store's work);
then rows expected vs present (lost, target 0), files referenced but missing, and PRAGMA
integrity_check (PostgreSQL: rows pointing at missing rows).

The VERY LAST line printed is one JSON object with all the figures: the first backend's at the
top level (as before: SQLite unless --postgres-only/--database-url), with "backend"; with
--postgres also "postgres": {the same figures on PostgreSQL}, "pg_page48_ms" (target <= 100 ms)
and "pg_vs_sqlite_page48_ratio".
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core.spec import Generation, MaskOptions, RunSpec, Subject  # noqa: E402

W, H = 384, 288
WORDS = ("beach sunset forest mountain lake city night neon street desert snow meadow autumn "
         "spring studio marble velvet golden hour misty harbor lighthouse castle garden library "
         "cafe rooftop canyon waterfall jungle temple bridge river field lavender tulip cherry "
         "blossom storm clouds rainbow aurora galaxy stars moon bokeh soft light cinematic "
         "watercolor oil painting photorealistic 8k detailed vintage film grain pastel").split()
NEGATIVES = ("blurry, lowres", "watermark, text, jpeg artifacts", "deformed, ugly", "")
MODELS = ("sd15-inpainting", "sdxl-inpainting", "tiny")
SCHEDULERS = ("dpm++", "euler_a", "pndm", None)


def photos() -> list[np.ndarray]:
    from skimage import data

    cam = data.camera()
    return [data.astronaut(), data.chelsea(), data.coffee(), np.dstack([cam, cam, cam])]


def crop(photo: np.ndarray, k: int) -> np.ndarray:
    """A WxH crop of `photo` at an offset chosen by k (resized up if the photo is small)."""
    from PIL import Image

    h, w = photo.shape[:2]
    if h < H or w < W:
        photo = np.asarray(Image.fromarray(photo).resize((max(w, W), max(h, H))))
        h, w = photo.shape[:2]
    y = (k * 37) % (h - H + 1)
    x = (k * 53) % (w - W + 1)
    return np.ascontiguousarray(photo[y:y + H, x:x + W])


def tinted(photo: np.ndarray, k: int) -> np.ndarray:
    """A distinct output-like image: crop + colour shift + a rectangle 'background' change."""
    img = crop(photo, k).astype(np.int16)
    img += np.array([(k * 13) % 60 - 30, (k * 29) % 60 - 30, (k * 7) % 60 - 30], np.int16)
    img[: H // 3] = (img[: H // 3] * 0.6 + np.array([k % 256, 120, 200]) * 0.4).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def ellipse_mask(k: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    cx, cy = W / 2 + (k % 17) * 5 - 40, H / 2 + (k % 11) * 4 - 20
    rx, ry = 80 + (k % 13) * 4, 100 + (k % 7) * 5
    return np.where(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1, 255, 0).astype(np.uint8)


def dir_bytes(path: Path) -> tuple[int, int]:
    total = files = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
            files += 1
    return total, files


def timed(fn, repeat: int = 15) -> tuple[float, float, object]:
    """(first call ms, median ms of `repeat` calls, last result)."""
    t = time.perf_counter()
    result = fn()
    first = (time.perf_counter() - t) * 1000
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return first, statistics.median(times), result


# ---------------------------------------------------------------------------------------- fill --
def fill(store, n_runs: int, distinct: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    pics = photos()
    sources = [crop(pics[k % 4], k * 3 + 1) for k in range(24)]
    pool_out: list[np.ndarray] = []
    pool_mask = [ellipse_mask(k) for k in range(min(distinct, 60))]
    start = datetime.now(timezone.utc) - timedelta(days=365)
    step = timedelta(days=365) / max(n_runs, 1)
    t0 = time.perf_counter()
    outputs_total = 0
    for i in range(n_runs):
        kind = rng.choices(("sd", "color", "blur", "transparent"), (70, 12, 12, 6))[0]
        status = rng.choices(("succeeded", "failed", "cancelled"), (92, 5, 3))[0]
        n_out = 0 if status != "succeeded" else (2 if kind == "sd" and rng.random() < 0.25 else 1)
        outs = []
        for v in range(n_out):
            k = len(pool_out)
            if k < distinct:
                pool_out.append(tinted(pics[k % 4], k))
                arr = pool_out[-1]
            else:
                arr = pool_out[(i * 7 + v) % distinct]
            if kind == "transparent":
                arr = np.dstack([arr, pool_mask[i % len(pool_mask)]])
            outs.append((arr, rng.randrange(2**32)))
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 15))) if kind == "sd" else None
        generation = Generation(
            prompt=prompt, negative=rng.choice(NEGATIVES), seed=outs[0][1] if outs else None,
            steps=rng.choice((20, 30, 50)), guidance=rng.choice((5.0, 7.5, 9.0)), strength=1.0,
            scheduler=rng.choice(SCHEDULERS), model=rng.choice(MODELS), variants=max(n_out, 1),
        ) if kind == "sd" else None
        spec = RunSpec(
            subject=Subject(clicks=[(rng.uniform(0, W - 1), rng.uniform(0, H - 1), rng.choice((0, 1)))
                                    for _ in range(rng.randint(1, 4))],
                            segmenter=rng.choice(("sam2-tiny", "sam-vit-b", "grabcut"))),
            mask=MaskOptions(grow=rng.choice((0, 2, 4)), feather=rng.choice((0, 3))),
            background={"sd": "sd", "color": "color:#1e90ff", "blur": "blur:15",
                        "transparent": "transparent"}[kind],
            generation=generation)
        store.record_run(
            source=sources[i % len(sources)], source_name=f"photo_{i % len(sources)}.jpg",
            spec=spec, device="cpu", mask=pool_mask[i % len(pool_mask)] if status != "failed" else None,
            outputs=outs, status=status,
            error="CUDA out of memory" if status == "failed" else
            ("cancelled" if status == "cancelled" else None),
            timings={"mask": 0.2, "diffusion": 12.0} if kind == "sd" else {"compose": 0.1},
            created=start + step * i + timedelta(seconds=rng.uniform(0, 1)))
        outputs_total += n_out
    fill_s = time.perf_counter() - t0
    # ~5% of outputs favourite
    fav_t = time.perf_counter()
    favs = 0
    for run in store.iter_runs(batch=500):
        for o in run.outputs:
            if rng.random() < 0.05:
                store.set_favorite(o.id)
                favs += 1
    return {"fill_s": fill_s, "outputs": outputs_total, "favorites": favs,
            "distinct_outputs": len(pool_out), "favorite_s": time.perf_counter() - fav_t}


def page_with_thumbs(store, **kw) -> int:
    page = store.list_runs(limit=48, **kw)
    n = 0
    for run in page.runs:
        thumb = run.outputs[0].thumb_path if run.outputs else run.source.thumb_path
        n += len(thumb.read_bytes())
    return n


def measure(store, n_runs: int) -> dict:
    from core.history import RunQuery
    from core.history.records import encode_cursor

    out: dict = {}
    first, med, nbytes = timed(lambda: page_with_thumbs(store))
    out["page48_first_ms"], out["page48_ms"], out["page48_thumb_bytes"] = first, med, nbytes
    middle = store.list_runs(limit=1, offset=n_runs // 2).runs[0]
    cursor = encode_cursor(middle.created.replace(tzinfo=None), middle.id)
    _, out["page48_deep_cursor_ms"], _ = timed(lambda: page_with_thumbs(store, cursor=cursor))
    _, out["page48_deep_offset_ms"], _ = timed(lambda: page_with_thumbs(store, offset=n_runs // 2))
    _, out["page48_favorites_ms"], _ = timed(
        lambda: page_with_thumbs(store, query=RunQuery(favorites=True)))
    _, out["count_all_ms"], _ = timed(lambda: store.count_runs())
    for label, text in (("search", "lighthouse"), ("search2", "golden hour"),
                        ("search_none", "zzz-no-such-word")):
        q = RunQuery(text=text)
        _, out[f"{label}_ms"], hits = timed(lambda: (store.list_runs(q, limit=48), store.count_runs(q)))
        out[f"{label}_hits"] = hits[1]
    _, out["get_run_ms"], _ = timed(lambda: store.get_run(middle.id))
    _, out["compare5_ms"], _ = timed(lambda: store.compare([r.id for r in store.list_runs(limit=5).runs]))
    return out


# -------------------------------------------------------------------------------------- stress --
def _stress_worker(worker: int, runs: int, go, results, url=None) -> None:
    os.environ["BACKDROP_SWEEP_GRACE_S"] = "60"
    if url:
        os.environ["BACKDROP_DATABASE_URL"] = url
    from core.history import open_store

    pics = photos()
    store = open_store(sweep=True)   # a writer, as core.jobs opens it
    src = crop(pics[worker % 4], worker)
    keys = [worker * 1000 + i for i in range(runs)]
    masks = [ellipse_mask(k) for k in keys]              # made before the clock starts: the timed
    outs = [tinted(pics[k % 4], k) for k in keys]        # part is only what the store does
    errors, done = [], 0
    go.wait()
    t = time.perf_counter()
    for i in range(runs):
        try:
            spec = RunSpec(subject=Subject(clicks=[(10, 10, 1)], segmenter="tiny"), background="sd",
                           generation=Generation(prompt=f"stress w{worker} r{i}", seed=i, steps=20,
                                                 model="tiny"))
            rid = store.start_run(source=src, spec=spec)
            store.finish_run(rid, mask=masks[i], outputs=[(outs[i], i)],
                             timings={"diffusion": 0.01}, device="cpu")
            done += 1
        except Exception as e:   # counted and reported, never hidden
            errors.append(f"{type(e).__name__}: {e}")
    results.put((worker, done, time.perf_counter() - t, errors[:3]))


def integrity(store) -> str:
    """SQLite's PRAGMA integrity_check; on a server, rows pointing at rows that are not there."""
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            return conn.exec_driver_sql("PRAGMA integrity_check").scalar()
        dangling = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM outputs o LEFT JOIN runs r ON r.id = o.run_id "
            "WHERE r.id IS NULL) + (SELECT count(*) FROM runs r LEFT JOIN sources s "
            "ON s.id = r.source_id WHERE s.id IS NULL)").scalar()
        return "ok" if dangling == 0 else f"{dangling} dangling rows"


def use_data(tmp: Path, url=None) -> Path:
    """The store (opened after this) keeps its data in `tmp` and its rows at `url` (default:
    SQLite in `tmp`); returns `tmp`."""
    os.environ["BACKDROP_DATA_DIR"] = str(tmp)
    if url:
        os.environ["BACKDROP_DATABASE_URL"] = url
    else:
        os.environ.pop("BACKDROP_DATABASE_URL", None)
    return tmp


def stress(procs: int, per_proc: int, url=None) -> dict:
    tmp = use_data(Path(tempfile.mkdtemp(prefix="backdrop-stress-")), url)
    from core.history import RunQuery, open_store

    open_store()  # create + migrate once up front (workers would also race safely for it)
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_stress_worker, args=(w, per_proc, go, results, url))
               for w in range(procs)]
    for p in workers:
        p.start()
    time.sleep(0.5)
    t = time.perf_counter()
    go.set()
    reports = [results.get(timeout=900) for _ in workers]
    wall = time.perf_counter() - t
    for p in workers:
        p.join()
    store = open_store()
    expected = procs * per_proc
    present = store.count_runs(RunQuery(status="succeeded"))
    with_outputs = sum(1 for r in store.iter_runs(batch=500) if len(r.outputs) == 1 and r.mask)
    checked = integrity(store)
    missing = store.sweep(grace_s=3600).missing_files
    errors = [e for rep in reports for e in rep[3]]
    shutil.rmtree(tmp, ignore_errors=True)
    return {"stress_processes": procs, "stress_runs_per_process": per_proc,
            "stress_expected": expected, "stress_present": present,
            "stress_complete_rows": with_outputs, "stress_lost": expected - present,
            "stress_missing_files": missing, "stress_integrity": checked,
            "stress_wall_s": wall, "stress_runs_per_s": expected / wall,
            "stress_worker_errors": errors}


# ---------------------------------------------------------------------------------------- main --
def db_bytes_of(store, tmp: Path) -> int:
    if store.engine.dialect.name == "sqlite":
        return sum(p.stat().st_size for p in tmp.glob("history.db*"))
    with store.engine.connect() as conn:   # our tables with their indexes and TOAST, no catalog
        return int(conn.exec_driver_sql(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN "
            "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
            "AND c.relkind = 'r'").scalar())


def settle(store) -> str:
    """After the fill: SQLite checkpoints its WAL; PostgreSQL VACUUM ANALYZEs (autovacuum's job in
    a deployment). Returns a description of the backend."""
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        import sqlite3
        return f"SQLite {sqlite3.sqlite_version} WAL"
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        version = conn.exec_driver_sql("SHOW server_version").scalar()
    return f"{store.engine.dialect.name} {version.split()[0]} ({store.engine.driver})"


def bench(args, url=None) -> dict:
    """Fill a fresh data dir (and the database at `url`, default SQLite in that dir) and measure."""
    tmp = use_data(Path(tempfile.mkdtemp(prefix="backdrop-history-bench-")), url)
    t = time.perf_counter()
    from core.history import open_store

    store = open_store(sweep=True)
    open_s = time.perf_counter() - t
    if store.count_runs():
        raise SystemExit(f"{store.engine.url!r} already holds runs: give an empty database")
    print(f"filling {args.runs} runs into {tmp} ({store.engine.dialect.name}) ...",
          file=sys.stderr, flush=True)
    figures: dict = {"runs": args.runs, "open_s": open_s}
    figures |= fill(store, args.runs, args.distinct)
    figures["fill_runs_per_s"] = args.runs / figures["fill_s"]
    figures["backend"] = settle(store)
    figures |= measure(store, args.runs)

    db_bytes = db_bytes_of(store, tmp)
    img_bytes, img_files = dir_bytes(tmp / "images")
    th_bytes, th_files = dir_bytes(tmp / "thumbs")
    # per distinct run: an output PNG + its thumbnail (+ a mask share); sources amortise to ~0
    out_png = [p.stat().st_size for p in (tmp / "images").rglob("*.png")]
    thumbs = [p.stat().st_size for p in (tmp / "thumbs").rglob("*.webp")]
    mean_png, mean_thumb = statistics.mean(out_png), statistics.mean(thumbs)
    outs_per_run = figures["outputs"] / args.runs
    figures |= {
        "db_bytes": db_bytes, "db_bytes_per_run": db_bytes / args.runs,
        "data_bytes": db_bytes + img_bytes + th_bytes, "data_files": img_files + th_files,
        "data_bytes_per_run_stored": (db_bytes + img_bytes + th_bytes) / args.runs,
        "mean_png_bytes": mean_png, "mean_thumb_bytes": mean_thumb,
        "outputs_per_run": outs_per_run,
        "data_bytes_per_run_if_unique": db_bytes / args.runs
        + outs_per_run * (mean_png + mean_thumb) + mean_png,   # + one mask PNG per run
        "image_size": f"{W}x{H}",
    }
    report = store.sweep(grace_s=0)
    figures["sweep_ms_after_fill"] = None
    t = time.perf_counter()
    store.sweep(grace_s=0)
    figures["sweep_ms_after_fill"] = (time.perf_counter() - t) * 1000
    figures["sweep_removed"] = report.removed_files
    figures["sweep_missing"] = report.missing_files
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        figures["data_dir"] = str(tmp)
    return figures


def table(f: dict, stress_done: bool) -> list[tuple[str, str]]:
    rows = [
        ("runs in history", f"{f['runs']}  ({f['outputs']} outputs, {f['distinct_outputs']} distinct "
                            f"output images of {f['image_size']}, {f['favorites']} favourites)"),
        ("fill (record_run, 1 tx per run)", f"{f['fill_s']:.1f} s  = {f['fill_runs_per_s']:.0f} runs/s"),
        ("open store (migrate + sweep, empty)", f"{f['open_s'] * 1000:.0f} ms"),
        ("page of 48 + read 48 thumbnails", f"{f['page48_ms']:.1f} ms median  "
                                            f"(first {f['page48_first_ms']:.1f} ms, "
                                            f"{f['page48_thumb_bytes'] / 1024:.0f} KiB)  target <= 100 ms"),
        ("  deep page (keyset cursor, middle)", f"{f['page48_deep_cursor_ms']:.1f} ms"),
        ("  deep page (offset, middle)", f"{f['page48_deep_offset_ms']:.1f} ms"),
        ("  favourites page", f"{f['page48_favorites_ms']:.1f} ms"),
        ("count all runs", f"{f['count_all_ms']:.2f} ms"),
        ("search 'lighthouse' (page+count)", f"{f['search_ms']:.1f} ms  ({f['search_hits']} hits)"),
        ("search 'golden hour' (page+count)", f"{f['search2_ms']:.1f} ms  ({f['search2_hits']} hits)"),
        ("search, no hits (page+count)", f"{f['search_none_ms']:.1f} ms"),
        ("get_run / compare 5", f"{f['get_run_ms']:.2f} ms / {f['compare5_ms']:.2f} ms"),
        ("DB size", f"{f['db_bytes'] / 2**20:.1f} MiB = {f['db_bytes_per_run']:.0f} B/run"),
        ("data/ size as stored (reuse)", f"{f['data_bytes'] / 2**20:.1f} MiB in {f['data_files']} files "
                                         f"= {f['data_bytes_per_run_stored'] / 1024:.1f} KiB/run"),
        ("data/ per run if all unique (est.)", f"{f['data_bytes_per_run_if_unique'] / 1024:.0f} KiB/run "
                                               f"(PNG {f['mean_png_bytes'] / 1024:.0f} KiB, "
                                               f"thumb {f['mean_thumb_bytes'] / 1024:.1f} KiB)"),
        ("sweep of the full data dir", f"{f['sweep_ms_after_fill']:.0f} ms "
                                       f"(removed {f['sweep_removed']}, missing {f['sweep_missing']})"),
    ]
    if stress_done:
        rows += [
            (f"stress: {f['stress_processes']} procs x {f['stress_runs_per_process']} runs",
             f"{f['stress_wall_s']:.1f} s = {f['stress_runs_per_s']:.0f} runs/s"),
            ("  rows expected / present / lost", f"{f['stress_expected']} / {f['stress_present']} / "
                                                 f"{f['stress_lost']}  (complete rows "
                                                 f"{f['stress_complete_rows']})"),
            ("  files missing / integrity_check", f"{f['stress_missing_files']} / {f['stress_integrity']}"),
            ("  worker errors", str(len(f["stress_worker_errors"]))),
        ]
    return rows


def rounded(figures: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else rounded(v) if isinstance(v, dict) else v)
            for k, v in figures.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--distinct", type=int, default=400,
                    help="runs whose output images are new; later runs reuse them (default 400)")
    ap.add_argument("--stress", action="store_true", help="also run the multi-process write test")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--per-proc", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the filled temp data dir")
    ap.add_argument("--postgres", action="store_true",
                    help="also run on a throwaway PostgreSQL server started for this run")
    ap.add_argument("--postgres-only", action="store_true",
                    help="with --postgres: skip SQLite")
    ap.add_argument("--database-url", help="run on this empty database instead of SQLite")
    args = ap.parse_args(argv)
    if args.postgres_only:
        args.postgres = True

    server = None
    runs: list[tuple[str, dict]] = []
    try:
        if not args.postgres_only:
            figures = bench(args, args.database_url)
            if args.stress:
                stress_url = None
                if args.database_url:
                    print("--stress with --database-url: the stress test runs on SQLite",
                          file=sys.stderr)
                figures |= stress(args.procs, args.per_proc, stress_url)
            runs.append(("sqlite" if not args.database_url else "url", figures))
        if args.postgres:
            sys.path.insert(0, str(ROOT / "tests" / "kit"))
            from pg import PostgresServer

            print("starting a PostgreSQL server ...", file=sys.stderr, flush=True)
            server = PostgresServer.start(durable=True)
            figures = bench(args, server.create_database("bench"))
            if args.stress:
                figures |= stress(args.procs, args.per_proc, server.create_database("stress"))
            runs.append(("postgres", figures))
    finally:
        if server is not None:
            server.stop()

    for _, f in runs:
        rows = table(f, args.stress)
        width = max(len(r[0]) for r in rows)
        print(f"History benchmark  (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"{f['backend']})")
        for name, value in rows:
            print(f"  {name:<{width}}  {value}")
    out = dict(runs[0][1])
    pg = dict(runs)["postgres"] if args.postgres else None
    if pg is not None and len(runs) > 1:
        out["postgres"] = pg
    if pg is not None:
        out["pg_page48_ms"] = pg["page48_ms"]
        out["pg_page48_target_ms"] = 100
        if len(runs) > 1:
            out["pg_vs_sqlite_page48_ratio"] = pg["page48_ms"] / runs[0][1]["page48_ms"]
    print(json.dumps(rounded(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
