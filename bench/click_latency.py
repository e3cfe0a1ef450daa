"""Click latency: embed once + cheap clicks (core.segment) vs re-embedding on every click.

    python bench/click_latency.py [--quick] [--models sam-vit-b,sam2-tiny] [--clicks 20] [--reps 3]
                                  [--threads N] [--backends torch,openvino]

Real-size architectures with RANDOM weights (nothing is downloaded): SAM ViT-B from
segment_anything's builder with checkpoint=None, SAM 2.1 Hiera-Tiny from transformers'
`Sam2Config()` defaults. The photo is skimage's coffee upscaled to 4000x3000 (12 MP), read-only like
a loaded image. For each model it prints

  (a) first click: hash + image embedding + decode, masks at preview size (long side 1024); also
      its process CPU time (all threads), which other processes' load inflates less than wall time
  (b) median of N further clicks with growing point sets, masks at preview size
      (also: its process CPU time, the prompt encoder + mask decoder alone on the same clicks (the
      floor; and the model's own decoder, which redoes the image-only half of the decoder on
      every click), the part spent resampling 3 low-res masks to the preview size, the
      same clicks with a WRITABLE array, i.e. re-hashing 12 MP on every click, and full-size masks)
  (c) the prototype's approach, re-embedding on every click: SamPredictor.set_image + predict with
      3 masks at full resolution (for SAM 2.1: processor + forward + post_process_masks at full size)
  and (c)/(b); the prototype's click (sam-vit-b's (c)) over (b); then peak RSS. The very last line
  is one JSON object with the same figures.

Each model runs once per backend (--backends; default both where `openvino` is installed): `torch`
is PyTorch, `openvino` the same model with its image encoder converted by core.cpu_encoders (into
a temporary folder, so the one-off conversion is timed too: `openvino_prepare_s`). The openvino
row carries `first_click_torch_s` and `ratio_first_click_torch_over_openvino` from the same run
(its (c) for SAM 2.1 is the model's own full forward, i.e. PyTorch's encoder in both rows),
and every row `first_click_stages_ms`: where a first click's time goes (hashing the photo, image
prep = resize + normalise, the encoder, the decoder's image-only half, one decode + resample).

Times depend on the load of the machine: other processes sharing the CPU inflate them.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.segment import Click, SegmentRequest  # noqa: E402

PHOTO_SIZE = (4000, 3000)       # (w, h): 12 MP
PREVIEW_SIDE = 1024


def _photo() -> np.ndarray:
    import cv2
    from skimage import data

    rgb = cv2.resize(data.coffee(), PHOTO_SIZE, interpolation=cv2.INTER_CUBIC)
    rgb.flags.writeable = False
    return rgb


def _clicks(n: int, w: int, h: int) -> list[Click]:
    """A first positive click on the cup, then a deterministic mix of positives and negatives."""
    rng = np.random.default_rng(0)
    clicks = [Click(0.5 * w, 0.45 * h, 1)]
    for i in range(n):
        clicks.append(Click(float(rng.uniform(0, w - 1)), float(rng.uniform(0, h - 1)), int(i % 3 != 2)))
    return clicks


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _cpu_timed(fn) -> tuple[float, float]:
    """(wall, process CPU) seconds: CPU time is less sensitive to other processes on a shared box."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def _resample_ms(preview: tuple[int, int], n: int = 20) -> float:
    """Median time of turning (3, 256, 256) low-res logits into 3 preview-size bool masks."""
    import torch

    from core.segment import _masks_from_low_res

    low = torch.randn(3, 256, 256, generator=torch.Generator().manual_seed(0))
    region = (256 * preview[1] / max(preview), 256 * preview[0] / max(preview))
    return statistics.median(_timed(lambda: _masks_from_low_res(low, region, preview[::-1]))
                             for _ in range(n)) * 1000


def _build_sam_vit_b(backend: str = "torch"):
    import torch
    from segment_anything import sam_model_registry

    from core import cpu_encoders
    from core.segment import SamSegmenter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = sam_model_registry["vit_b"](checkpoint=None).eval()
    if backend == "openvino":
        assert cpu_encoders.use_for_sam(model, None, "cpu", force=True), "OpenVINO conversion failed"
    return SamSegmenter("sam-vit-b", model)


def _build_sam2_tiny(backend: str = "torch"):
    import torch
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    from core import cpu_encoders
    from core.segment import Sam2Segmenter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Sam2Model(Sam2Config()).eval()
    if backend == "openvino":
        assert cpu_encoders.use_for_sam2(model, None, "cpu", force=True), "OpenVINO conversion failed"
    return Sam2Segmenter("sam2-tiny", model, Sam2Processor(Sam2ImageProcessor()))


def _first_click_stages(seg, rgb, request, preview) -> dict:
    """Milliseconds of each stage of a first click, run one by one on a fresh copy of the photo."""
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide

    from core.segment import SamSegmenter, image_key

    photo = np.array(rgb)
    photo.flags.writeable = False
    ms = {"hash": _timed(lambda: image_key(photo)) * 1000}
    with torch.inference_mode():
        if isinstance(seg, SamSegmenter):
            t = time.perf_counter()
            x = torch.as_tensor(ResizeLongestSide(seg.img_size).apply_image(photo)).permute(2, 0, 1)
            x = seg.model.preprocess(x.contiguous()[None].float())
            ms["image_prep"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            features = seg.model.image_encoder(x)
            ms["encoder"] = (time.perf_counter() - t) * 1000
            if seg.decoder is not None:
                ms["decoder_prepare"] = _timed(lambda: seg.decoder.prepare(features)) * 1000
        else:
            t = time.perf_counter()
            pixels = seg.processor(images=np.array(photo), return_tensors="pt")["pixel_values"]
            ms["image_prep"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            f = list(seg.model.get_image_embeddings(pixels))
            ms["encoder"] = (time.perf_counter() - t) * 1000
            if seg.decoder is not None:
                ms["decoder_prepare"] = _timed(lambda: seg.decoder.prepare(f[-1], skips=(f[1], f[0]))) * 1000
    seg.prepare(photo)      # cached: what is left is one click's decode + resample
    ms["decode_resample"] = _timed(lambda: seg.segment(photo, request, preview)) * 1000
    return {k: round(v, 1) for k, v in ms.items()}


def _reembed_sam(seg, rgb, click, reps):
    """The prototype: a fresh SamPredictor.set_image + predict (3 masks, full size) per click."""
    from segment_anything import SamPredictor

    def once():
        p = SamPredictor(seg.model)
        p.set_image(np.array(rgb))
        p.predict(point_coords=np.array([[click.x, click.y]]), point_labels=np.array([click.label]),
                  multimask_output=True)
    return [_timed(once) for _ in range(reps)]


def _reembed_sam2(seg, rgb, click, reps):
    """The same approach with transformers: processor + full forward + post_process_masks."""
    import torch

    def once():
        inputs = seg.processor(images=rgb, input_points=[[[[click.x, click.y]]]], input_labels=[[[1]]],
                               return_tensors="pt")
        with torch.inference_mode():
            out = seg.model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"],
                            input_labels=inputs["input_labels"], multimask_output=True)
        seg.processor.post_process_masks(out.pred_masks, inputs["original_sizes"])
    return [_timed(once) for _ in range(reps)]


def _decoder_only(seg, rgb, request, stock: bool = False) -> None:
    """Prompt encoder + mask decoder alone on the cached embedding, low-res output (no resampling,
    no validation, no hashing): the floor a click cannot go below. The click path's decoder
    (core.sam_decoder, image-only half cached), or with `stock` the model's own decoder on the
    same weights (segment_anything's MaskDecoder, transformers' Sam2Model): what a click cost before."""
    import torch

    from core.segment import SamSegmenter

    emb = seg._embedding(rgb)
    h, w = rgb.shape[:2]
    with torch.inference_mode():
        if isinstance(seg, SamSegmenter):
            sx, sy = emb.input_size[1] / w, emb.input_size[0] / h
            pts = torch.tensor([[[c.x * sx, c.y * sy] for c in request.clicks]])
            lab = torch.tensor([[c.label for c in request.clicks]])
            sparse, dense = seg.model.prompt_encoder(points=(pts, lab), boxes=None, masks=None)
            if emb.decoder_state is not None and not stock:
                seg.decoder.decode(emb.decoder_state, sparse, True)
            else:
                seg.model.mask_decoder(image_embeddings=emb.features,
                                       image_pe=seg.model.prompt_encoder.get_dense_pe(),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=True)
        else:
            sx, sy = seg.input_hw[1] / w, seg.input_hw[0] / h
            pts = torch.tensor([[[[c.x * sx, c.y * sy] for c in request.clicks]]])
            lab = torch.tensor([[[c.label for c in request.clicks]]])
            if emb.decoder_state is not None and not stock:
                sparse, _ = seg.model.prompt_encoder(input_points=pts, input_labels=lab, input_boxes=None,
                                                     input_masks=None)
                seg.decoder.decode(emb.decoder_state, sparse[:, 0], True)
            else:
                seg.model(image_embeddings=emb.features, input_points=pts, input_labels=lab, multimask_output=True)


MODELS = {
    "sam-vit-b": (_build_sam_vit_b, _reembed_sam),
    "sam2-tiny": (_build_sam2_tiny, _reembed_sam2),
}


def bench_model(name: str, rgb: np.ndarray, n_clicks: int, reps: int, backend: str = "torch") -> dict:
    build, reembed = MODELS[name]
    t = time.perf_counter()
    seg = build(backend)
    load_s = time.perf_counter() - t
    h, w = rgb.shape[:2]
    s = PREVIEW_SIDE / max(w, h)
    preview = (round(w * s), round(h * s))
    clicks = _clicks(n_clicks, w, h)

    # (a) first click: hash + embedding + decode
    first, first_cpu = _cpu_timed(lambda: seg.segment(rgb, SegmentRequest(tuple(clicks[:1])), preview))
    # warm-up the decode path once more (allocator, lazy init), not counted
    seg.segment(rgb, SegmentRequest(tuple(clicks[:1])), preview)

    # (b) further clicks, growing point sets, preview size
    timed = [_cpu_timed(lambda k=k: seg.segment(rgb, SegmentRequest(tuple(clicks[:k + 1])), preview))
             for k in range(1, n_clicks + 1)]
    click_times = [wall for wall, _ in timed]
    click_cpu = [cpu for _, cpu in timed]
    decoder_times = [_timed(lambda k=k: _decoder_only(seg, rgb, SegmentRequest(tuple(clicks[:k + 1]))))
                     for k in range(1, n_clicks + 1)]
    stock_times = [_timed(lambda k=k: _decoder_only(seg, rgb, SegmentRequest(tuple(clicks[:k + 1])), True))
                   for k in range(1, n_clicks + 1)]
    # (b') the same clicks with a writable copy of the photo (re-hashed every click)
    writable = np.array(rgb)
    seg.prepare(writable)   # same content, same hash: no new embedding
    writable_times = [_timed(lambda k=k: seg.segment(writable, SegmentRequest(tuple(clicks[:k + 1])), preview))
                      for k in range(1, min(n_clicks, 10) + 1)]
    # (d) full-size masks (what an export needs), a few
    full_times = [_timed(lambda k=k: seg.segment(rgb, SegmentRequest(tuple(clicks[:k + 1])), None))
                  for k in range(1, 4)]
    assert seg.encoder_calls == 1, seg.encoder_calls
    stages = _first_click_stages(seg, rgb, SegmentRequest(tuple(clicks[:1])), preview)
    calls = seg.encoder_calls

    # (c) re-embedding on every click
    re_times = reembed(seg, rgb, clicks[0], reps)

    b = statistics.median(click_times)
    c = statistics.median(re_times)
    return {
        "model": name,
        "backend": backend,
        "params_m": round(sum(p.numel() for p in seg.model.parameters()) / 1e6, 1),
        "build_s": round(load_s, 2),
        "first_click_s": round(first, 3),
        "first_click_cpu_s": round(first_cpu, 3),     # process CPU time: less sensitive to other load
        "first_click_stages_ms": stages,
        "click_median_ms": round(b * 1000, 1),
        "click_p90_ms": round(float(np.percentile(click_times, 90)) * 1000, 1),
        "click_max_ms": round(max(click_times) * 1000, 1),
        "click_cpu_median_ms": round(statistics.median(click_cpu) * 1000, 1),
        "of_which_resample_ms": round(_resample_ms(preview), 1),
        "decoder_only_median_ms": round(statistics.median(decoder_times) * 1000, 1),
        "stock_decoder_median_ms": round(statistics.median(stock_times) * 1000, 1),
        "clicks": len(click_times),
        "click_writable_median_ms": round(statistics.median(writable_times) * 1000, 1),
        "click_fullsize_median_ms": round(statistics.median(full_times) * 1000, 1),
        "reembed_median_s": round(c, 3),
        "reembed_reps": len(re_times),
        "ratio_reembed_over_click": round(c / b, 1),
        "encoder_calls": calls,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer clicks and one re-embedding repetition")
    ap.add_argument("--models", default="sam-vit-b,sam2-tiny", help="comma-separated: " + ",".join(MODELS))
    ap.add_argument("--clicks", type=int, default=None, help="further clicks to time (default 20, quick 8)")
    ap.add_argument("--reps", type=int, default=None, help="re-embedding repetitions (default 3, quick 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--backends", default=None,
                    help="comma-separated: torch,openvino (default: both where openvino is installed)")
    args = ap.parse_args(argv)
    n_clicks = args.clicks or (8 if args.quick else 20)
    reps = args.reps or (1 if args.quick else 3)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        print(f"error: unknown model(s) {unknown}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    from core import cpu_engine
    backends = [b.strip() for b in (args.backends or ("torch,openvino" if cpu_engine.available() else "torch"))
                .split(",") if b.strip()]
    if set(backends) - {"torch", "openvino"} or ("openvino" in backends and not cpu_engine.available()):
        print(f"error: backends {backends}: torch and/or openvino (installed: {cpu_engine.available()})",
              file=sys.stderr)
        return 2

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rgb = _photo()
    h, w = rgb.shape[:2]
    print(f"photo {w}x{h} ({w * h / 1e6:.1f} MP), preview long side {PREVIEW_SIDE}, "
          f"torch {torch.__version__} threads={torch.get_num_threads()}, cpus={os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.2f}", flush=True)
    if "openvino" in backends:
        print(f"openvino {cpu_engine.precision()} (converted into a temporary folder, timed as build)",
              flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="click-latency-engine-") as engine_dir:
        os.environ["BACKDROP_WEIGHTS_DIR"] = engine_dir     # the converted encoders go there, then away
        for name in names:
            for backend in backends:
                print(f"... {name} ({backend})", flush=True)
                before = cpu_engine.cache_size_bytes()
                rows.append(bench_model(name, rgb, n_clicks, reps, backend))
                if backend == "openvino":
                    rows[-1]["openvino_precision"] = cpu_engine.precision()
                    rows[-1]["openvino_prepare_s"] = rows[-1]["build_s"]
                    rows[-1]["engine_mb"] = round((cpu_engine.cache_size_bytes() - before) / 2 ** 20)
                gc.collect()

    for r in rows:          # the backend against PyTorch, same model, same run
        ref = next((t for t in rows if t["model"] == r["model"] and t["backend"] == "torch"), None)
        if r["backend"] == "openvino" and ref:
            r["first_click_torch_s"] = ref["first_click_s"]
            r["ratio_first_click_torch_over_openvino"] = round(ref["first_click_s"] / r["first_click_s"], 2)

    # The original prototype = SAM vit_b re-embedding on every click (PyTorch); each row's clicks against it.
    proto = next((r["reembed_median_s"] for r in rows if r["model"] == "sam-vit-b" and r["backend"] == "torch"),
                 None)
    for r in rows:
        r["ratio_prototype_over_click"] = round(proto / (r["click_median_ms"] / 1000), 1) if proto else None

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
    cols = [("model", "model", "{}"), ("backend", "backend", "{}"), ("(a) first click s", "first_click_s", "{:.2f}"),
            ("(b) click median ms", "click_median_ms", "{:.1f}"), ("p90 ms", "click_p90_ms", "{:.1f}"),
            ("cpu ms", "click_cpu_median_ms", "{:.1f}"), ("decoder-only ms", "decoder_only_median_ms", "{:.1f}"),
            ("stock decoder ms", "stock_decoder_median_ms", "{:.1f}"),
            ("resample ms", "of_which_resample_ms", "{:.1f}"),
            ("writable ms", "click_writable_median_ms", "{:.1f}"),
            ("full-size ms", "click_fullsize_median_ms", "{:.1f}"),
            ("(c) re-embed s", "reembed_median_s", "{:.2f}"), ("(c)/(b)", "ratio_reembed_over_click", "{:.0f}x"),
            ("prototype/(b)", "ratio_prototype_over_click", "{:.0f}x")]
    table = [[h for h, _, _ in cols]] + [[f.format(r[k]) if r[k] is not None else "-" for _, k, f in cols]
                                         for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    print()
    for i, row in enumerate(table):
        print("  ".join(c.rjust(wd) for c, wd in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * wd for wd in widths))
    for r in rows:
        print(f"first click {r['model']} ({r['backend']}), ms: "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["first_click_stages_ms"].items())
              + (f"; PyTorch/OpenVINO {r['ratio_first_click_torch_over_openvino']:.2f}x, conversion "
                 f"{r['openvino_prepare_s']:.1f} s, {r['engine_mb']} MB"
                 if "ratio_first_click_torch_over_openvino" in r else ""))
    print("\nprototype/(b): the prototype's click (SAM vit_b re-embedding every time, (c) of sam-vit-b in "
          "this run) over this model's click; needs sam-vit-b in --models")
    print(f"(b) = {n_clicks} clicks with 2..{n_clicks + 1} points, masks at preview size; "
          f"(c) = {reps} repetition(s); peak RSS {peak_rss_mb:.0f} MB; load avg now {os.getloadavg()[0]:.2f}")
    print(json.dumps({"photo": [w, h], "preview_long_side": PREVIEW_SIDE, "quick": args.quick,
                      "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                      "machine": platform.machine(), "peak_rss_mb": round(peak_rss_mb),
                      "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
