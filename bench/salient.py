"""Cost of the learned subject finder (core.salient, BiRefNet) per photo.

`learned_s`: seconds per photo at BiRefNet's 1024x1024 input on the CPU with 2 threads, the
real-size architecture with random weights (the cost does not depend on the weights), fp32: one
forward pass and the sigmoid (the photo's resize to 1024 and the mask's back are a few ms more).
Prints one JSON line last.

    python bench/salient.py --reps 1                 # birefnet-lite
    python bench/salient.py --reps 1 --general       # and the general model (Swin-L)
    python bench/salient.py --device cuda --general  # on a GPU
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _seconds(name: str, reps: int, device: str, threads: int) -> float:
    import numpy as np
    import torch
    from core.salient.arch import ARCHS, BiRefNet
    torch.set_num_threads(threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BiRefNet(ARCHS[name]).eval().to(device)
    size = ARCHS[name].size
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, size, size), np.float32))
    times = []
    with torch.inference_mode():
        for _ in range(reps + (device != "cpu")):       # one warm-up on a GPU
            start = time.perf_counter()
            model(x.to(device)).sigmoid().cpu()
            times.append(time.perf_counter() - start)
    times = times[1:] if device != "cpu" else times
    return float(np.median(times))


def bench_learned(reps: int = 1, *, general: bool = False, device: str = "cpu",
                  threads: int = 2) -> dict:
    """{"learned_s": lite seconds/photo, "learned_s_general": ... when asked} at 1024x1024."""
    out = {"learned_s": round(_seconds("birefnet-lite", reps, device, threads), 2)}
    if general:
        out["learned_s_general"] = round(_seconds("birefnet", reps, device, threads), 2)
    out.update(device=device, threads=threads, size=1024, reps=reps)
    return out


def learned_s(reps: int = 1) -> dict:
    """bench_learned for bench/catalogue.py --learned (its key: learned_s)."""
    return bench_learned(reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--general", action="store_true", help="also the general model (Swin-L)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(bench_learned(a.reps, general=a.general, device=a.device, threads=a.threads)))


if __name__ == "__main__":
    main()
