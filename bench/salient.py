"""Cost of the learned subject finder (core.salient, BiRefNet) per photo.

`learned_s`: seconds per photo at BiRefNet's 1024x1024 input on the CPU with 2 threads, the
real-size architecture with random weights (the cost does not depend on the weights), fp32: one
forward pass and the sigmoid (the photo's resize to 1024 and the mask's back are a few ms more).
Prints one JSON line last. With --openvino, the lite model also runs through core.cpu_encoders
(converted once into a temporary folder: `openvino_prepare_s`; `learned_openvino_s` against
PyTorch's in the same run, `ratio_learned_torch_over_openvino`; both after one warm-up run).

    python bench/salient.py --reps 1                 # birefnet-lite
    python bench/salient.py --reps 1 --openvino      # and the same through OpenVINO (docs/cpu.md)
    python bench/salient.py --reps 1 --general       # and the general model (Swin-L)
    python bench/salient.py --device cuda --general  # on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _seconds(name: str, reps: int, device: str, threads: int, openvino: Optional[dict] = None,
             warm: bool = False) -> float:
    """Median seconds of one forward pass (after one warm-up run on a GPU or if `warm`); with
    `openvino` (a dict that receives prepare_s) the model converted by core.cpu_encoders first."""
    import numpy as np
    import torch
    from core.salient.arch import ARCHS, BiRefNet
    torch.set_num_threads(threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BiRefNet(ARCHS[name]).eval().to(device)
    size = ARCHS[name].size
    if openvino is not None:
        from core import cpu_encoders
        start = time.perf_counter()
        assert cpu_encoders.use_for_birefnet(model, None, "cpu", size, force=True), "conversion failed"
        openvino["prepare_s"] = round(time.perf_counter() - start, 1)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, size, size), np.float32))
    times = []
    with torch.inference_mode():
        for _ in range(reps + (device != "cpu" or warm)):       # one warm-up on a GPU
            start = time.perf_counter()
            model(x.to(device)).sigmoid().cpu()
            times.append(time.perf_counter() - start)
    times = times[1:] if device != "cpu" or warm else times
    return float(np.median(times))


def bench_learned(reps: int = 1, *, general: bool = False, device: str = "cpu",
                  threads: int = 2, openvino: bool = False) -> dict:
    """{"learned_s": lite seconds/photo, "learned_s_general": ... when asked} at 1024x1024."""
    out = {"learned_s": round(_seconds("birefnet-lite", reps, device, threads, warm=openvino), 2)}
    if openvino:
        from core import cpu_engine
        info: dict = {}
        with tempfile.TemporaryDirectory(prefix="salient-engine-") as folder:
            os.environ["BACKDROP_WEIGHTS_DIR"] = folder     # the converted model goes there, then away
            out["learned_openvino_s"] = round(_seconds("birefnet-lite", reps, device, threads, info, True), 2)
        out.update(openvino_precision=cpu_engine.precision(), openvino_prepare_s=info["prepare_s"],
                   ratio_learned_torch_over_openvino=round(out["learned_s"] / out["learned_openvino_s"], 2))
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
    ap.add_argument("--openvino", action="store_true", help="also the lite model through OpenVINO (CPU)")
    a = ap.parse_args()
    print(json.dumps(bench_learned(a.reps, general=a.general, device=a.device, threads=a.threads,
                                   openvino=a.openvino)))


if __name__ == "__main__":
    main()
