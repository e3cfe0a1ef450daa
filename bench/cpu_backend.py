"""The CPU backend figure (issue 23, docs/cpu.md): Fast mode end to end on the real-size SD 1.5
inpainting architecture with random weights (TAESD architecture as the autoencoder, LCM scheduler,
4 steps, guidance 1, 512x384), PyTorch fp32 and the OpenVINO engine in the same run; the UNet pass
at Quality's batch of 2 for both (Quality = 30 of them plus the Fast run's rest, extrapolated);
the one-off conversion time and the cached engine's size; the picture's PSNR between the two.

    python bench/cpu_backend.py --threads 2      # last line: JSON
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
    import torch
    x, t, e = torch.randn(batch, 9, 48, 64), torch.tensor(500), torch.randn(batch, 77, 768)
    times = []
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            unet(x, t, encoder_hidden_states=e, return_dict=False)
            times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="cpu-engine-bench-")
    os.environ["BACKDROP_WEIGHTS_DIR"] = tmp
    from diffusers import AutoencoderTiny, LCMScheduler
    from bench.generate import build_sd15_random
    from core import cpu_engine
    pipe = build_sd15_random()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipe.vae = AutoencoderTiny().eval()
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    _say("torch fast ...")
    torch_first, _ = _fast(pipe)                   # first inference: PyTorch's own warm-up (oneDNN)
    torch_fast, ref = _fast(pipe)
    torch_pass = _unet_pass(pipe.unet)
    prec = cpu_engine.precision()
    _say(f"converting ({prec}) ...")
    t0 = time.perf_counter()
    cpu_engine.use_for(pipe, model_path=None, prec=prec, say=_say)
    convert_s = time.perf_counter() - t0
    ov_first, _ = _fast(pipe)                      # first inference: OpenVINO's own warm-up
    ov_fast, out = _fast(pipe)
    ov_pass = _unet_pass(pipe.unet)
    mse = float(np.mean((out.astype(np.float64) - ref.astype(np.float64)) ** 2))
    psnr = round(10 * np.log10(255.0 ** 2 / mse), 1) if mse else float("inf")
    rest_t, rest_o = torch_fast - 4 * torch_pass / 2, ov_fast - 4 * ov_pass / 2
    tq, oq = rest_t + 30 * torch_pass, rest_o + 30 * ov_pass
    d = {"bench": "cpu_backend", "threads": args.threads, "size": "512x384", "precision": prec,
         "torch_fast_s": round(torch_fast, 2), "openvino_fast_s": round(ov_fast, 2),
         "torch_first_fast_s": round(torch_first, 2), "openvino_first_fast_s": round(ov_first, 2),
         "backend_fast_ratio": round(torch_fast / ov_fast, 2),
         "torch_unet_pass_b2_s": round(torch_pass, 2), "openvino_unet_pass_b2_s": round(ov_pass, 2),
         "torch_quality_s_extrapolated": round(tq, 1), "openvino_quality_s_extrapolated": round(oq, 1),
         "backend_quality_ratio": round(tq / oq, 2), "conversion_s": round(convert_s, 1),
         "engine_mb": round(cpu_engine.cache_size_bytes() / 2 ** 20), "fast_psnr_db": psnr,
         "load_avg": os.getloadavg()[0]}
    print(json.dumps(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
