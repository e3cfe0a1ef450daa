"""The service under load: N concurrent clients x M replace requests through Serve's HTTP proxy,
with 1 and then 2 replicas of each model deployment in the same run, and optionally one inpainter
replica killed (ray.kill) in the middle of a third round.

    python bench/serve.py [--clients 8] [--requests 25] [--size 640x480] [--background color|sd]
                          [--clicks 10] [--kill] [--batch 200] [--postgres | --database-url URL]

Tiny models on CPU, one local cluster with ray.init(num_cpus=2). Every request uploads its photo
(one photo per client, real photos from skimage.data resized to --size) and a subject mask (so the
run needs no segmenter), and asks for a background that differs per request (so every output is a
new file). "color" (the default) makes the throughput figure a measure of the service's own work
per run (upload, decode, compose, PNG + thumbnail encoding, history row) rather than of a model;
"sd" paints with the tiny Stable Diffusion pipeline (2 steps; built in code into a temp weights dir).

Model replicas get num_cpus=0.5 (2 replicas of both deployments fit in 2 CPUs); the ingress 0.
Checked after each round: 0 failed, 0 lost: every successful response's run id is in the history
exactly once and succeeded, with its output, mask and source files present; the history holds no
other run of that round (except rows left "running"/failed by a killed replica, counted apart).

--clicks N: after the 2-replica round, one client and then all clients at once embed their photo
once (/v1/embed, tiny SAM) and click N times by the handle (/v1/segment, masks at preview size):
click latency through the whole HTTP path, and how many clicks had to re-embed (0 when Serve routes
each photo's clicks to the replica that holds its embedding).

--batch N: core.batch.run_batch in team mode (BACKDROP_SERVER_URL) over N photos with masks, 8 in
flight: wall time and time per photo (no model runs with a colour background, so that is the
per-photo overhead: upload, decode, compose, encode, history row, download of the result).

Reported per round: throughput (requests/s), p50/p95/max latency; "throughput_ratio_2v1". With
--kill: requests that failed (each with its one-line error), requests the ingress sent again to
another replica ("retried"), orphan rows. Numbers are from a shared 2-core machine: other
processes inflate them. The VERY LAST line printed is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _photos(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    import cv2
    from skimage import data
    base = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    out = []
    for i in range(n):
        img = cv2.resize(base[i % len(base)], size, interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(np.roll(img, 7 * i, axis=1)))
    return out


def _ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.where(((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1, 255, 0).astype(np.uint8)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _spec(background: str, k: int) -> dict:
    if background == "sd":
        return {"background": "sd", "generation": {"prompt": f"a field, take {k}", "steps": 2,
                                                   "seed": k, "model": "tiny"}}
    return {"background": "color:#%02x%02x%02x" % (k % 256, (k // 256) % 256, 97)}


def _round(url: str, label: str, clients: int, requests: int, uploads, background: str,
           first_key: int, during=None) -> dict:
    """One round of load; returns the figures and the per-request outcomes."""
    from core.service.client import ServiceClient

    results: list[dict] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    done = [0]

    def worker(c: int) -> None:
        photo, mask = uploads[c]
        with ServiceClient(url, token="") as client:
            start.wait()
            for i in range(requests):
                key = first_key + c * requests + i
                t = time.perf_counter()
                try:
                    out = client.replace(_spec(background, key), photo=photo, mask=mask,
                                         source_name=f"{label}-{c}-{i}")
                    res = {"ok": True, "run_id": out["run_id"],
                           "files": [o["hash"] for o in out["outputs"]] + [out["mask"]]}
                except Exception as e:       # every failure is counted with its one line
                    res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                res["latency"] = time.perf_counter() - t
                with lock:
                    results.append(res)
                    done[0] += 1

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    if during is not None:
        during(lambda: done[0])
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = [r["latency"] for r in results if r["ok"]]
    ok = sum(r["ok"] for r in results)
    return {"label": label, "requests": len(results), "ok": ok, "failed": len(results) - ok,
            "errors": sorted({r["error"] for r in results if not r["ok"]})[:5],
            "wall_s": round(wall, 2), "throughput_rps": round(ok / wall, 2),
            "p50_ms": round(_pct(lat, 0.5) * 1000, 1), "p95_ms": round(_pct(lat, 0.95) * 1000, 1),
            "max_ms": round(max(lat) * 1000, 1) if lat else None, "_results": results}


def _check(store, round_: dict, label: str) -> dict:
    """0 lost: every returned run id once in history, succeeded, files present; other rows."""
    from core.history import RunQuery
    from core.history.blobs import image_rel

    runs = [r for r in store.iter_runs(RunQuery()) if r.source_name.startswith(f"{label}-")]
    by_id: dict[int, int] = {}
    for r in runs:
        by_id[r.id] = by_id.get(r.id, 0) + 1
    ok = [r for r in round_["_results"] if r["ok"]]
    ids = [r["run_id"] for r in ok]
    status = {r.id: r.status for r in runs}
    lost = sum(1 for i in ids if by_id.get(i) != 1 or status.get(i) != "succeeded")
    dup_ids = len(ids) - len(set(ids))
    missing = 0
    for r in runs:
        if r.id in set(ids):
            digests = [o.hash for o in r.outputs] + [r.source.hash] + ([r.mask.hash] if r.mask else [])
            missing += sum(not store.has_file(image_rel(d)) for d in digests)
    # a request is named by its source_name: a second row of the same request = recorded twice
    names = {}
    for r in runs:
        names.setdefault(r.source_name, []).append(r.status)
    twice = sum(1 for v in names.values() if v.count("succeeded") > 1)
    orphans = sum(1 for r in runs if r.id not in set(ids))
    return {"lost": lost + dup_ids, "recorded_twice": twice, "missing_files": missing,
            "orphan_rows": orphans,
            "orphan_statuses": sorted({r.status for r in runs if r.id not in set(ids)})}


def _clicks(url: str, clients: int, clicks: int, photos: list[np.ndarray]) -> dict:
    """Each of `clients` clients at once: /v1/embed its photo once (tiny SAM), then `clicks`
    /v1/segment calls by the handle at a preview size; latency per click, and how many clicks had
    to re-embed (a click routed to a replica that does not hold the photo)."""
    from core.images import encode_png
    from core.service.client import ServiceClient

    lat: list[float] = []
    reembedded = [0]
    lock = threading.Lock()

    def worker(c: int) -> None:
        rgb = photos[c]
        h, w = rgb.shape[:2]
        with ServiceClient(url, token="") as client:
            handle = client.embed(photo=encode_png(rgb), segmenter="tiny")["embedding"]
            rng = np.random.default_rng(c)
            for _ in range(clicks):
                x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
                t = time.perf_counter()
                out = client.segment({"clicks": [[x, y, 1]]}, embedding=handle,
                                     size=(min(w, 1024), int(h * min(w, 1024) / w)))
                with lock:
                    lat.append(time.perf_counter() - t)
                    reembedded[0] += bool(out["embedded"])

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"clicks": len(lat), "p50_ms": round(_pct(lat, 0.5) * 1000, 1),
            "p95_ms": round(_pct(lat, 0.95) * 1000, 1), "reembedded": reembedded[0]}


def _batch(url: str, n: int, photos: list[np.ndarray], tmp: Path, background: str) -> dict:
    """`python -m core batch` in team mode (core.batch.run_batch with BACKDROP_SERVER_URL): n photos
    with their masks in a folder, 8 photos in flight; what a photo costs outside any model."""
    from core.batch import BatchSubject, run_batch
    from core.history import open_store
    from core.images import save_image
    from core.spec import RunSpec

    src, masks, out = tmp / "batch-in", tmp / "batch-masks", tmp / "batch-out"
    src.mkdir(), masks.mkdir()
    h, w = photos[0].shape[:2]
    for i in range(n):
        save_image(np.roll(photos[i % len(photos)], 3 * i, axis=0), src / f"p{i:04d}.png")
        save_image(_ellipse(h, w), masks / f"p{i:04d}.png")
    spec = RunSpec(background=_spec(background, 0)["background"],
                   generation=_spec(background, 0).get("generation"))
    os.environ["BACKDROP_SERVER_URL"] = url
    try:
        t = time.perf_counter()
        rep = run_batch(src, out, spec, BatchSubject(masks=masks), name="bench-batch", workers=8)
        wall = time.perf_counter() - t
    finally:
        os.environ.pop("BACKDROP_SERVER_URL", None)
    store = open_store()
    own = sorted(sum(v for k, v in store.get_run(i).timings.items() if k not in ("record",)) * 1000
                 for i in rep.run_ids)
    return {"photos": n, "wall_s": round(wall, 1), "per_photo_ms": round(wall / n * 1000, 1),
            "done": len(rep.done), "failed": len(rep.failed), "run_ids_unique": len(set(rep.run_ids)),
            "run_median_ms": round(own[len(own) // 2], 1) if own else None}


def _kill_one_inpainter(app: str) -> str:
    import ray
    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if "SERVE_REPLICA" in a["name"] and f"{app}#inpainter" in a["name"]]
    if not names:
        return "no inpainter replica found"
    victim = names[0]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    return victim["name"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="per client")
    ap.add_argument("--size", default="640x480", help="photo size WxH")
    ap.add_argument("--background", choices=("color", "sd"), default="color")
    ap.add_argument("--clicks", type=int, default=10,
                    help="per client, after the 2-replica round: /v1/segment by embedding handle (0: skip)")
    ap.add_argument("--kill", action="store_true", help="a third round: kill one inpainter replica mid-load")
    ap.add_argument("--batch", type=int, default=0, metavar="N",
                    help="after the 2-replica round: python -m core batch of N photos through the service")
    ap.add_argument("--database-url", default=None, help="history database (default: SQLite in the temp dir)")
    ap.add_argument("--postgres", action="store_true",
                    help="history on a throwaway PostgreSQL server started for the run (tests/kit/pg.py, durable)")
    args = ap.parse_args(argv)
    server = None
    if args.postgres:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "kit"))
        from pg import PostgresServer
        server = PostgresServer.start(durable=True)
        args.database_url = server.create_database("serve")
    try:
        return _bench(args)
    finally:
        if server is not None:
            server.stop()


def _bench(args) -> int:
    w, h = (int(v) for v in args.size.lower().split("x"))

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    env = {"BACKDROP_DATA_DIR": str(tmp / "data"), "BACKDROP_WEIGHTS_DIR": str(tmp / "weights"),
           "BACKDROP_DATABASE_URL": args.database_url or f"sqlite:///{tmp / 'data' / 'history.db'}",
           "BACKDROP_MODE": "quality", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    os.environ.update(env)
    if args.clicks:
        from core.segment import build_tiny_sam
        build_tiny_sam(tmp / "weights" / "sam_tiny.pth")
    if args.background == "sd":
        from core.inpaint import build_tiny_inpaint
        build_tiny_inpaint(tmp / "weights" / "tiny-inpainting")

    import ray
    from ray import serve

    from core.history import open_store
    from core.images import encode_png
    from core.service import ServiceConfig, build_app

    photos = _photos(args.clients, (w, h))
    mask = encode_png(_ellipse(h, w))
    uploads = [(encode_png(p), mask) for p in photos]

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cluster_s = time.perf_counter() - t
    url = f"http://127.0.0.1:{port}"
    report: dict = {"clients": args.clients, "requests_per_client": args.requests,
                    "photo": f"{w}x{h}", "background": args.background,
                    "note": ("color background: the service's own work per run (upload, decode, compose, "
                             "PNG/thumbnail encoding, history row), no model" if args.background == "color"
                             else "tiny Stable Diffusion, 2 steps, CPU"),
                    "cluster_start_s": round(cluster_s, 1), "database": env["BACKDROP_DATABASE_URL"].split(":")[0]}
    rounds = {}
    key = 0
    store = None
    try:
        for replicas in (1, 2):
            cfg = ServiceConfig(min_replicas=replicas, max_replicas=replicas, num_cpus=0.5,
                                num_gpus=0, env=env)
            t = time.perf_counter()
            serve.run(build_app(cfg), name="bench", route_prefix="/")
            up = time.perf_counter() - t
            # warm-up: one request per client (imports, first model load), not timed
            _round(url, f"warm{replicas}", args.clients, 1, uploads, args.background, 10**6 + key)
            key += args.clients
            r = _round(url, f"r{replicas}", args.clients, args.requests, uploads, args.background, key)
            key += args.clients * args.requests
            store = store or open_store()
            r.update(_check(store, r, f"r{replicas}"), deploy_s=round(up, 1))
            rounds[replicas] = r
            print(f"{replicas} replica(s): {r['ok']}/{r['requests']} ok, {r['throughput_rps']} req/s, "
                  f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms; lost {r['lost']}, "
                  f"missing files {r['missing_files']}", flush=True)
        if args.clicks:
            for n, name in ((1, "click_1client"), (args.clients, f"click_{args.clients}clients")):
                c = _clicks(url, n, args.clicks, photos)
                report.update({f"{name}_{k}": v for k, v in c.items()})
                print(f"clicks, {n} client(s) at once (2 replicas, tiny SAM, by embedding handle): "
                      f"{c['clicks']} clicks, p50 {c['p50_ms']} ms, p95 {c['p95_ms']} ms, "
                      f"re-embedded {c['reembedded']}", flush=True)
        if args.batch:
            b = _batch(url, args.batch, photos, tmp, args.background)
            report.update({f"batch_{k}": v for k, v in b.items()})
            print(f"batch of {b['photos']} photos through the service (2 replicas, 8 workers): "
                  f"{b['wall_s']} s, {b['per_photo_ms']} ms per photo, {b['done']} done, "
                  f"{b['failed']} failed; runs' own work (compose + record) median {b['run_median_ms']} ms",
                  flush=True)
        if args.kill:
            killed = {}

            def killer(progress):
                total = args.clients * args.requests
                while progress() < total * 0.3:
                    time.sleep(0.05)
                killed["replica"] = _kill_one_inpainter("bench")
                killed["after_requests"] = progress()

            import httpx
            before = httpx.get(f"{url}/v1/health").json()["retried"]
            r = _round(url, "kill", args.clients, args.requests, uploads, args.background, key, killer)
            r.update(_check(store, r, "kill"), killed=killed,
                     retried=httpx.get(f"{url}/v1/health").json()["retried"] - before)
            rounds["kill"] = r
            print(f"kill round: killed {killed.get('replica')} after {killed.get('after_requests')} "
                  f"requests; {r['ok']}/{r['requests']} ok, {r['failed']} failed, {r['retried']} retried, "
                  f"lost {r['lost']}, orphan rows {r['orphan_rows']} {r['orphan_statuses']}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)

    for name, r in rounds.items():
        r.pop("_results", None)
        prefix = f"replicas{name}" if isinstance(name, int) else name
        for k, v in r.items():
            if k != "label":
                report[f"{prefix}_{k}"] = v
    if 1 in rounds and 2 in rounds and rounds[1]["throughput_rps"]:
        report["throughput_ratio_2v1"] = round(rounds[2]["throughput_rps"] / rounds[1]["throughput_rps"], 2)
    report["failed_total"] = sum(r["failed"] for k, r in rounds.items() if k != "kill")
    report["lost_total"] = sum(r["lost"] + r["missing_files"] for r in rounds.values())
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
