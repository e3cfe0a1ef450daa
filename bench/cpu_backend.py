"""The CPU backend figures (issue 23, docs/cpu.md): Fast mode end to end on the real-size SD 1.5
inpainting architecture with random weights (TAESD architecture as the autoencoder, LCM scheduler,
4 steps, guidance 1, 512x384), PyTorch fp32, the OpenVINO engine (bf16 where the CPU has it) and
the OpenVINO engine with int8 weights (NNCF) in the same run; the UNet pass at Quality's batch of 2
for each (Quality = 30 of them plus the Fast run's rest: EXTRAPOLATED, and said so); the one-off
conversion time and the cached engine's size; how far each drifts from PyTorch: the picture's PSNR
and the UNet noise prediction's relative error on the same inputs.

    python bench/cpu_backend.py --threads 2 [--no-int8]      # last line: JSON
    python bench/generate.py --backends-only                  # the same figures, from there

`measure()` is what bench/generate.py's (f) section calls.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fast(pipe, size=(512, 384), steps=4):
    import torch
    from PIL import Image
    w, h = size
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    m = np.zeros((h, w), np.uint8)
    m[:, : w // 2] = 255
    t0 = time.perf_counter()
    out = pipe(prompt="a sunny beach", image=image, mask_image=Image.fromarray(m), width=w, height=h,
               num_inference_steps=steps, guidance_scale=1.0,
               generator=torch.Generator("cpu").manual_seed(0), output_type="np").images[0]
    return time.perf_counter() - t0, (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _unet_pass(unet, batch=2, reps=2):
    """The fastest of `reps` UNet passes on fixed inputs, and its noise prediction."""
    import torch
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(batch, 9, 48, 64, generator=g), torch.tensor(500)
    e = torch.randn(batch, 77, 768, generator=g)
    times = []
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            out = unet(x, t, encoder_hidden_states=e, return_dict=False)[0]
            times.append(time.perf_counter() - t0)
    return min(times), out


def _psnr(a, b) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return round(10 * np.log10(255.0 ** 2 / mse), 1) if mse else float("inf")


def _backend(pipe, name: str, ref: dict, say, **engine) -> dict:
    """Convert (timed), warm up, then one timed Fast run and the UNet pass, with the drift."""
    from core import cpu_engine
    before = cpu_engine.cache_size_bytes()
    say(f"{name}: converting ...")
    t0 = time.perf_counter()
    with cpu_engine.progress_to(lambda text, f: None):
        cpu_engine.use_for(pipe, model_path=None, say=say, **engine)
    convert_s = time.perf_counter() - t0
    first, _ = _fast(pipe)                         # first inference: the runtime's own warm-up
    fast, out = _fast(pipe)
    unet_pass, eps = _unet_pass(pipe.unet)
    rest = fast - 4 * unet_pass / 2
    return {f"{name}_fast_s": round(fast, 2), f"{name}_first_fast_s": round(first, 2),
            f"{name}_unet_pass_b2_s": round(unet_pass, 2),
            f"{name}_quality_s_extrapolated": round(rest + 30 * unet_pass, 1),
            f"{name}_conversion_s": round(convert_s, 1),
            f"{name}_engine_added_mb": round((cpu_engine.cache_size_bytes() - before) / 2 ** 20),
            f"{name}_fast_psnr_db": _psnr(out, ref["picture"]),
            f"{name}_unet_rel_error": float(f"{float((eps - ref['eps']).norm() / ref['eps'].norm()):.2e}")}


def measure(threads: int = 2, int8: bool = True, say=_say) -> dict:
    """All the figures above, in one run (minutes; several GB of memory). Keys ending in
    `fast_s` are each backend's Fast time; `backend_*_ratio` are PyTorch's time over OpenVINO's."""
    import shutil
    import torch
    torch.set_num_threads(threads)
    folder = tempfile.mkdtemp(prefix="cpu-engine-bench-")     # the engines (GBs), removed after
    os.environ["BACKDROP_WEIGHTS_DIR"] = folder
    try:
        return _measure(threads, int8, say)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _measure(threads: int, int8: bool, say) -> dict:
    import torch
    from diffusers import AutoencoderTiny, LCMScheduler
    from bench.generate import build_sd15_random
    from core import cpu_engine
    pipe = build_sd15_random()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipe.vae = AutoencoderTiny().eval()
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    say("torch fast ...")
    torch_first, _ = _fast(pipe)                   # first inference: PyTorch's own warm-up (oneDNN)
    torch_fast, picture = _fast(pipe)
    torch_pass, eps = _unet_pass(pipe.unet)
    ref = {"picture": picture, "eps": eps}
    prec = cpu_engine.precision()
    d = {"bench": "cpu_backend", "threads": threads, "size": "512x384", "precision": prec,
         "torch_fast_s": round(torch_fast, 2), "torch_first_fast_s": round(torch_first, 2),
         "torch_unet_pass_b2_s": round(torch_pass, 2),
         "torch_quality_s_extrapolated": round(torch_fast - 2 * torch_pass + 30 * torch_pass, 1)}
    d.update(_backend(pipe, "openvino", ref, say, prec=prec, int8=False))
    d["engine_mb"] = round(cpu_engine.cache_size_bytes() / 2 ** 20)
    d["conversion_s"] = d["openvino_conversion_s"]
    if int8:
        cpu_engine.restore(pipe)                   # PyTorch modules again: convert them with int8
        d.update(_backend(pipe, "openvino_int8", ref, say, prec=prec, int8=True))
        shared = sum(p.stat().st_size for p in cpu_engine.cache_dir().glob("taesd-*/*"))
        d["openvino_int8_engine_mb"] = round(d.pop("openvino_int8_engine_added_mb") + shared / 2 ** 20)
    for name in ("openvino", "openvino_int8"):
        if f"{name}_fast_s" in d:
            tag = "" if name == "openvino" else "int8_"
            d[f"backend_{tag}fast_ratio"] = round(torch_fast / d[f"{name}_fast_s"], 2)
            d[f"backend_{tag}quality_ratio"] = round(d["torch_quality_s_extrapolated"]
                                                     / d[f"{name}_quality_s_extrapolated"], 2)
    d.pop("openvino_engine_added_mb", None)
    d["quality_how"] = ("extrapolated: the Fast run minus its 4 UNet passes (batch 1, about half a "
                        "batch-2 pass each) plus 30 measured batch-2 passes")
    d["load_avg"] = round(os.getloadavg()[0], 2)
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 (NNCF) engine")
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.threads, int8=not args.no_int8)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
