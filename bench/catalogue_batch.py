"""A catalogue batch through the real command line: N generated studio shots (bench/catalogue.py's
make_shot) -> `python -m core batch SHOTS --out OUT --auto --preset amazon` (white, 2000x2000,
contact shadow), colour background. Prints photos per minute, then checks that a batch killed
with SIGKILL midway and run again loses nothing: every photo once in the output folder and once
(succeeded) in history. Last line JSON.

    python bench/catalogue_batch.py --n 100 [--size 1600x1200]
    from bench.catalogue_batch import run; run(20)   # {"batch_per_min": ..., "batch_kill_ok": ...}
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _shots(folder: Path, n: int, size: tuple[int, int]) -> None:
    from bench.catalogue import make_shot
    from core.images import save_image
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        save_image(make_shot(i, size).image, folder / f"shot{i:03d}.jpg")


def _batch(shots: Path, out: Path, data: Path, timeout: float = 3600):
    env = dict(os.environ, BACKDROP_DATA_DIR=str(data))
    return subprocess.Popen([sys.executable, "-m", "core", "batch", str(shots), "--out", str(out),
                             "--auto", "--preset", "amazon", "--format", "jpg", "--name", "bench"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _succeeded(data: Path) -> list[str]:
    db = data / "history.db"
    if not db.exists():
        db = next(data.rglob("*.db"))
    with sqlite3.connect(db) as con:
        return [r[0] for r in con.execute("SELECT source_name FROM runs WHERE status = 'succeeded'")]


def run(n: int = 100, size: tuple[int, int] = (1600, 1200)) -> dict:
    """Photos per minute of the CLI batch (`batch_per_min`) and the kill -9 / rerun check
    (`batch_kill_ok`: every photo once in the output and in history)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shots = tmp / "shots"
        _shots(shots, n, size)
        t = time.perf_counter()
        p = _batch(shots, tmp / "out", tmp / "data")
        out, err = p.communicate()
        seconds = time.perf_counter() - t
        if p.returncode not in (0, 1):
            raise RuntimeError(f"batch failed: {err.strip()[-300:]}")
        done = len(list((tmp / "out").glob("*.jpg")))
        # kill -9 midway, then run again
        p = _batch(shots, tmp / "out2", tmp / "data2")
        while len(list((tmp / "out2").glob("*.jpg"))) < max(1, n // 2) and p.poll() is None:
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed_at = len(list((tmp / "out2").glob("*.jpg")))
        p = _batch(shots, tmp / "out2", tmp / "data2")
        p.communicate()
        files = sorted(f.stem for f in (tmp / "out2").glob("*.jpg"))
        runs = _succeeded(tmp / "data2")
        per_photo = {name: runs.count(f"bench/{name}.jpg") for name in files}
        review = json.loads((tmp / "out" / "review.json").read_text()).get("review", [])
        return {"batch_photos": n, "batch_size": f"{size[0]}x{size[1]}", "batch_done": done,
                "batch_s": round(seconds, 1), "batch_per_min": round(60 * done / seconds, 1),
                "batch_review": len(review), "batch_killed_at": killed_at,
                "batch_kill_ok": len(files) == n and all(c == 1 for c in per_photo.values())
                and len(runs) == n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="photos in the batch")
    ap.add_argument("--size", default="1600x1200", help="photo size WxH")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.lower().split("x"))
    print(json.dumps(run(a.n, (w, h))))


if __name__ == "__main__":
    main()
