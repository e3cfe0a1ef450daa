"""The image encoders of the first click (SAM 2.1, SAM, SAM-HQ) and the auto subject's BiRefNet
through OpenVINO on a CPU: the slow step of a first click (the embedding, once per photo) and of the
auto subject, 2.5-5x faster on the same cores (docs/cpu.md).

    from core import cpu_encoders
    cpu_encoders.use_for_sam2(model, path, device)     # in core.segment.sam2.load_sam2
    cpu_encoders.use_for_sam(model, path, device)      # in core.segment.sam.load_sam
    cpu_encoders.use_for_birefnet(model, path, device, side)   # in core.salient._load

When `cpu_engine.wanted(device)` (BACKDROP_CPU_BACKEND=openvino or auto, the device a CPU, the
`openvino` package installed), the encoder is converted once (`openvino.convert_model` at the fixed
1024x1024 input the processors always give it), cached with the inpainting engine under
<weights dir>/cpu-engine/<component>-<hash>/ (hash: component, weights file, input size, OpenVINO
version; see core/cpu_engine.py) and compiled bf16 where the CPU has it. The segmenter keeps calling
the model as before: the encoder's call is replaced by the compiled model's, on the model instance
only. Embeddings match PyTorch's to float rounding in fp32 (relative error < 1e-4) and to about 1%
in bf16 (tests/integration/test_cpu_encoders.py). A conversion that fails leaves PyTorch in place,
with one warning line: the segmenter works either way.
"""
from __future__ import annotations

import logging
import types
import warnings
from pathlib import Path
from typing import Callable, Optional

from core import cpu_engine

log = logging.getLogger("backdrop.cpu_engine")

#: The square input of every SAM / SAM 2.1 / SAM-HQ encoder (their processors resize and pad to it).
SIDE = 1024


# What a user reads while one is prepared ("preparing the CPU engine, once (~N s): <label>, 1 of 1").
LABELS = {"sam-encoder": "click model (SAM)", "sam2-encoder": "click model (SAM 2.1)",
          "samhq-encoder": "click model (SAM-HQ)", "birefnet": "subject model (BiRefNet)"}


def _compiled(component: str, fn, owner, path: Optional[Path], prec: Optional[str],
              say: Optional[Callable[[str], None]], side: int = SIDE, fixed: bool = False):
    """The compiled encoder `fn(owner, pixels)` for (1, 3, side, side) input, cached; None (and one
    warning line) where OpenVINO cannot convert it."""
    import torch
    key = cpu_engine.cache_key(component, path, extra=f"{side}x{side}")
    try:
        with warnings.catch_warnings():     # the tracer's notes on shape arithmetic: static here
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            module = cpu_engine.Apply(fn, owner, (1, 3, side, side) if fixed else None).eval()
            label = LABELS.get(component, component)
            parts = [(label, key, module, (torch.zeros(1, 3, side, side),), False)]
            return cpu_engine.load_all(parts, prec or cpu_engine.precision(), say)[label]
    except Exception as e:  # an op OpenVINO lacks, a library change, a cache it cannot write
        log.warning("the %s stays on PyTorch: OpenVINO could not prepare or save it (%s)", component,
                    cpu_engine.first_line(e))
        return None


def _outputs(compiled, x) -> list:
    """The compiled model's outputs for torch input `x`, as torch float32 tensors, in order (a
    request per call: segmenters embed different photos on several threads at once)."""
    import numpy as np
    import torch
    result = compiled.create_infer_request().infer([np.ascontiguousarray(x.detach().float().cpu().numpy())])
    return [torch.from_numpy(np.array(result[out])) for out in compiled.outputs]


# ----------------------------------------------------------------------------- SAM (segment_anything)
def _sam_encoder(encoder, x):
    return encoder(x)


def use_for_sam(model, path: Optional[Path], device: str, prec: Optional[str] = None,
                say: Optional[Callable[[str], None]] = None, force: bool = False) -> bool:
    """Run `model.image_encoder` (segment_anything's `Sam`; input already padded to 1024x1024)
    through OpenVINO when the CPU engine serves `device` (or `force`). True when it does."""
    if not (force or cpu_engine.wanted(device)):
        return False
    encoder = model.image_encoder
    side = int(getattr(encoder, "img_size", SIDE))
    compiled = _compiled("sam-encoder", _sam_encoder, encoder, path, prec, say, side)
    if compiled is None:
        return False

    def forward(x):
        return _outputs(compiled, x)[0].to(x.dtype)

    encoder.forward = forward
    encoder.openvino = compiled
    return True


# ----------------------------------------------------------------------------- SAM 2.1 (transformers)
def _sam2_embeddings(model, pixel_values):
    return tuple(model.get_image_embeddings(pixel_values))


def use_for_sam2(model, path: Optional[Path], device: str, prec: Optional[str] = None,
                 say: Optional[Callable[[str], None]] = None, force: bool = False) -> bool:
    """Run `model.get_image_embeddings` (transformers' `Sam2Model`: the three feature maps the
    decoder reads) through OpenVINO when the CPU engine serves `device` (or `force`)."""
    if not (force or cpu_engine.wanted(device)):
        return False
    compiled = _compiled("sam2-encoder", _sam2_embeddings, model, path, prec, say)
    if compiled is None:
        return False
    torch_embeddings = model.get_image_embeddings

    def get_image_embeddings(pixel_values, **kwargs):
        if kwargs or tuple(pixel_values.shape) != (1, 3, SIDE, SIDE):
            return torch_embeddings(pixel_values, **kwargs)
        return [t.to(pixel_values.dtype) for t in _outputs(compiled, pixel_values)]

    model.get_image_embeddings = get_image_embeddings
    model.openvino = compiled
    return True


# ----------------------------------------------------------------------------- SAM-HQ (transformers)
def _samhq_encoder(vision, pixel_values):
    out = vision(pixel_values=pixel_values)
    return out.last_hidden_state, out.intermediate_embeddings[0]


def use_for_sam_hq(model, path: Optional[Path], device: str, prec: Optional[str] = None,
                   say: Optional[Callable[[str], None]] = None, force: bool = False) -> bool:
    """Run `model.vision_encoder` (transformers' `SamHQModel`) through OpenVINO when the CPU engine
    serves `device` (or `force`): the embedding and the first global block's output, which is all
    core.segment.samhq reads."""
    if not (force or cpu_engine.wanted(device)):
        return False
    vision = model.vision_encoder
    compiled = _compiled("samhq-encoder", _samhq_encoder, vision, path, prec, say)
    if compiled is None:
        return False
    torch_forward = vision.forward

    def forward(pixel_values=None, *args, **kwargs):
        if args or kwargs or pixel_values is None or tuple(pixel_values.shape) != (1, 3, SIDE, SIDE):
            return torch_forward(pixel_values, *args, **kwargs)
        embeddings, early = (t.to(pixel_values.dtype) for t in _outputs(compiled, pixel_values))
        return types.SimpleNamespace(last_hidden_state=embeddings, intermediate_embeddings=[early])

    vision.forward = forward
    vision.openvino = compiled
    return True


# ----------------------------------------------------------------------------- BiRefNet (core.salient)
def _birefnet(model, x):
    return model(x)


def use_for_birefnet(model, path: Optional[Path], device: str, side: int, prec: Optional[str] = None,
                     say: Optional[Callable[[str], None]] = None, force: bool = False) -> bool:
    """Run the auto subject's BiRefNet (core.salient.arch; input side x side) through OpenVINO when
    the CPU engine serves `device` (or `force`): `model(x)` gives the same last prediction."""
    if not (force or cpu_engine.wanted(device)):
        return False
    compiled = _compiled("birefnet", _birefnet, model, path, prec, say, side, fixed=True)
    if compiled is None:
        return False
    torch_forward = model.forward

    def forward(x):
        if tuple(x.shape) != (1, 3, side, side):
            return torch_forward(x)
        return _outputs(compiled, x)[0].to(x.dtype)

    model.forward = forward
    model.openvino = compiled
    return True
