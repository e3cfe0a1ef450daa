"""The CPU engine: the inpainting UNet (fast LoRA already fused), the text encoder (CLIP) and the
autoencoder (TAESD or the full VAE) run through OpenVINO instead of PyTorch on a CPU, several times
faster on the same cores.

    from core import cpu_engine
    with cpu_engine.progress_to(lambda text, fraction: ...):     # optional: the one-off preparation
        cpu_engine.use_for(pipe, model_path=path, lora="lcm-sd15")

`use_for` converts each module once (`openvino.convert_model` from the torch module), saves the
result under <weights dir>/cpu-engine/<component>-<hash>/ (the hash names the model folder, its
files' sizes and times, the LoRA, the component, int8 or not and the OpenVINO version; shapes stay
dynamic, so one engine serves every size), and the next load reads it back in about a second. While
it converts, `progress_to`'s listener gets "preparing the CPU engine, once (~N s): UNet, 1 of 4" and
the fraction done, twice a second. A damaged cache folder is rebuilt with one warning line. The
pipeline keeps calling `pipe.unet(...)` / `pipe.text_encoder(...)` / `pipe.vae.decode(...)` as
before: each module's forward is replaced by a call of the compiled model.

Precision: bf16 where the CPU runs it natively (AMX or avx512_bf16, OpenVINO's "BF16" capability),
fp32 elsewhere. BACKDROP_CPU_BACKEND picks `torch` (the old path), `openvino`, `openvino-int8` (the
UNet's and text encoder's weights compressed to int8 by NNCF, an optional package) or `auto`
(OpenVINO when it is installed and the device is the CPU). GPUs and MPS never use it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger("backdrop.cpu_engine")

# Say "preparing the CPU engine, once, ~N s": a conversion takes about this many seconds per
# million parameters on 2 cores (measured: SD 1.5's UNet + TAESD, 865 M, 62.5 s).
_SECONDS_PER_MPARAM = 0.08
Listener = Callable[[str, float], None]
_listener: ContextVar[Optional[Listener]] = ContextVar("cpu_engine_listener", default=None)
NO_NNCF = "BACKDROP_CPU_BACKEND=openvino-int8 needs the nncf package: pip install nncf"


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def wanted(device: str) -> bool:
    """Whether the CPU engine serves `device` under BACKDROP_CPU_BACKEND."""
    from core.settings import settings
    choice = settings().cpu_backend
    if not device.startswith("cpu") or choice == "torch":
        return False
    return available()


def int8_wanted() -> bool:
    """Whether BACKDROP_CPU_BACKEND asks for int8 weights (openvino-int8)."""
    from core.settings import settings
    return settings().cpu_backend == "openvino-int8"


@contextmanager
def progress_to(listener: Listener):
    """While inside, a conversion in this thread tells `listener(text, fraction)` how it goes (and
    the listeners of any progress_to around this one)."""
    outer = _listener.get()

    def both(text: str, fraction: float) -> None:
        listener(text, fraction)
        outer(text, fraction)

    token = _listener.set(listener if outer is None else both)
    try:
        yield
    finally:
        _listener.reset(token)


def estimate_s(module) -> int:
    """About how many seconds converting `module` takes here (at least 1)."""
    return max(1, round(sum(p.numel() for p in module.parameters()) / 1e6 * _SECONDS_PER_MPARAM))


def precision() -> str:
    """'bf16' where the CPU computes bf16 natively, else 'f32'."""
    import openvino as ov
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in caps else "f32"


def cache_dir() -> Path:
    from core import config
    return config.weights_dir() / "cpu-engine"


def _folder_stamp(path: Optional[Path]) -> str:
    if path is None:
        return ""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return ";".join(f"{p.relative_to(path) if p != path else p.name}:{p.stat().st_size}:"
                    f"{int(p.stat().st_mtime)}" for p in files)


def cache_key(component: str, model_path: Optional[Path], lora: Optional[str] = None,
              extra: str = "") -> str:
    import openvino as ov
    text = "|".join([component, str(Path(model_path).resolve()) if model_path else "",
                     _folder_stamp(model_path), lora or "", extra, ov.get_version()])
    return f"{component}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def first_line(e: BaseException) -> str:
    """An error's first line, short (its type's name when it says nothing): for one log line."""
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def _core():
    import openvino as ov
    return ov.Core()


def _compile(model, prec: str):
    import torch
    config = {"INFERENCE_PRECISION_HINT": prec, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": max(1, torch.get_num_threads())}
    return _core().compile_model(model, "CPU", config)


def _int8(model):
    try:
        import nncf
    except ImportError:
        from core.errors import InvalidOptionError
        raise InvalidOptionError(NO_NNCF) from None
    import contextlib
    import io
    nncf.set_log_level(logging.WARNING)             # its tables and bar stay off stdout (the CLI's)
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.compress_weights(model)          # int8 asymmetric weights, no data needed


def load_or_convert(key: str, module, example: tuple, prec: str,
                    say: Optional[Callable[[str], None]] = None, *, int8: bool = False):
    """The compiled model of `module` (a torch module taking `example`'s tensors), read from the
    cache folder `key` or converted and saved there first (atomically: a temp folder renamed).
    int8: its weights compressed to int8 (NNCF; put "int8" in the key too)."""
    import openvino as ov
    import torch
    folder = cache_dir() / key
    xml = folder / "model.xml"
    if xml.exists():
        try:
            return _compile(_core().read_model(str(xml)), prec)
        except Exception as e:
            log.warning("the cached CPU engine %s is damaged (%s); rebuilding it", folder, first_line(e))
            shutil.rmtree(folder, ignore_errors=True)
    msg = f"preparing the CPU engine, once, ~{estimate_s(module)} s ({key})"
    log.info(msg)
    if say is not None:
        say(msg)
    t0 = time.perf_counter()
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder
    with torch.no_grad():       # traced once, without torch's re-run check (a third faster here)
        model = ov.convert_model(TorchScriptPythonDecoder(module, example_input=example,
                                                          trace_kwargs={"check_trace": False}))
    if int8:
        model = _int8(model)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
    try:
        os.replace(tmp, folder)
    except OSError:                                # another process saved it first
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("CPU engine %s ready in %.1f s", key, time.perf_counter() - t0)
    return _compile(model, prec)


def _run(compiled, *arrays):
    import numpy as np
    import torch
    out = compiled([np.ascontiguousarray((a.float() if a.is_floating_point() else a).detach().cpu().numpy())
                    for a in arrays])
    return torch.from_numpy(np.array(out[0]))


@contextmanager
def _ticking(listener: Optional[Listener], text: str, start: float, span: float, seconds: int):
    """Tell `listener` (text, fraction) twice a second while one conversion runs: from `start`
    towards start + span over its estimated `seconds` (never past 95 % of it)."""
    if listener is None:
        yield
        return
    stop, t0 = threading.Event(), time.monotonic()

    def tick():
        while True:
            try:
                listener(text, start + span * min(0.95, (time.monotonic() - t0) / seconds))
            except Exception:                       # a listener's trouble never stops a conversion
                log.debug("progress listener failed", exc_info=True)
            if stop.wait(0.5):
                return

    thread = threading.Thread(target=tick, name="cpu-engine-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class _UNetCall(__import__("torch").nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def _wrap_unet(unet, compiled) -> None:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
    torch_forward = unet.forward

    def forward(sample, timestep, encoder_hidden_states, *args, timestep_cond=None,
                added_cond_kwargs=None, return_dict=True, cross_attention_kwargs=None, **kw):
        import torch
        if args or timestep_cond is not None or added_cond_kwargs or cross_attention_kwargs or kw:
            return torch_forward(sample, timestep, encoder_hidden_states, *args,
                                 timestep_cond=timestep_cond, added_cond_kwargs=added_cond_kwargs,
                                 cross_attention_kwargs=cross_attention_kwargs,
                                 return_dict=return_dict, **kw)
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[:1]
        out = _run(compiled, sample, t, encoder_hidden_states).to(sample.dtype)
        return (out,) if not return_dict else UNet2DConditionOutput(sample=out)

    unet.forward = forward
    unet.openvino = compiled


def _wrap_text(text, compiled) -> None:
    """text_encoder(ids) calls the compiled encoder; anything else (a mask, hidden states for
    clip_skip) stays on PyTorch."""
    torch_forward = text.forward

    def forward(input_ids=None, attention_mask=None, *args, output_hidden_states=None,
                return_dict=None, **kw):
        if input_ids is None or attention_mask is not None or args or output_hidden_states or kw:
            return torch_forward(input_ids, attention_mask, *args,
                                 output_hidden_states=output_hidden_states, return_dict=return_dict,
                                 **kw)
        out = _run(compiled, input_ids).to(text.dtype)
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        return (out,) if return_dict is False else BaseModelOutputWithPooling(last_hidden_state=out)

    text.forward = forward
    text.openvino = compiled


class Apply(__import__("torch").nn.Module):
    """A torch module whose forward(x) is fn(owner, x): what convert_model traces. `fixed`: a shape
    x is reshaped to first, so every shape inside the graph is a constant (BiRefNet's deformable
    convolutions come out empty from OpenVINO with the shapes left dynamic)."""

    def __init__(self, fn, owner, fixed: Optional[tuple] = None):
        super().__init__()
        self.owner = owner
        self.fn = fn
        self.fixed = fixed

    def forward(self, x):
        return self.fn(self.owner, x.reshape(self.fixed) if self.fixed else x)


def _text_hidden(text, input_ids):
    return text(input_ids)[0]


def _kl_encode(vae, x):
    return vae.quant_conv(vae.encoder(x)) if vae.quant_conv is not None else vae.encoder(x)


def _kl_decode(vae, z):
    z = vae.post_quant_conv(z) if vae.post_quant_conv is not None else z
    return vae.decoder(z)


def _wrap_vae(vae, enc, dec, tiny: bool) -> None:
    """vae.encode / vae.decode call the compiled encoder / decoder, same outputs as diffusers'."""
    torch_decode = vae.decode

    def decode(z, return_dict=True, generator=None, **kw):
        if kw:
            return torch_decode(z, return_dict=return_dict, **kw)
        out = _run(dec, z).to(z.dtype)
        from diffusers.models.autoencoders.vae import DecoderOutput
        return (out,) if not return_dict else DecoderOutput(sample=out)

    def encode(x, return_dict=True):
        h = _run(enc, x).to(x.dtype)
        if tiny:
            from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTinyOutput
            return (h,) if not return_dict else AutoencoderTinyOutput(latents=h)
        from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
        dist = DiagonalGaussianDistribution(h)
        return (dist,) if not return_dict else AutoencoderKLOutput(latent_dist=dist)

    vae.decode, vae.encode = decode, encode
    vae.openvino = (enc, dec)


def use_for(pipe, *, model_path: Optional[Path], lora: Optional[str] = None,
            vae_path: Optional[Path] = None, prec: Optional[str] = None,
            say: Optional[Callable[[str], None]] = None, size: tuple[int, int] = (512, 384),
            int8: Optional[bool] = None) -> bool:
    """Run `pipe`'s UNet, text encoder and autoencoder through OpenVINO (converted once, cached;
    see the module docstring). False (nothing changed) for a UNet the engine does not take (SDXL's
    extra conditioning). `size` (w, h) only shapes the example inputs of the conversion. int8
    (default: BACKDROP_CPU_BACKEND=openvino-int8): the UNet's and text encoder's weights in int8."""
    import torch
    unet, vae, text = pipe.unet, pipe.vae, getattr(pipe, "text_encoder", None)
    if getattr(unet.config, "addition_embed_type", None) or unet.config.time_cond_proj_dim:
        return False
    prec = prec or precision()
    int8 = int8_wanted() if int8 is None else int8
    mark = "int8" if int8 else ""
    f = int(pipe.vae_scale_factor)
    w, h = size[0] // f, size[1] // f
    ehs = torch.zeros(1, 77, int(unet.config.cross_attention_dim))
    parts = [("UNet", cache_key("unet", model_path, lora, mark), _UNetCall(unet).eval(),
              (torch.randn(1, int(unet.config.in_channels), h, w), torch.tensor([999.0]), ehs), int8)]
    if text is not None:
        parts.append(("text encoder", cache_key("text-encoder", model_path, lora, mark),
                      Apply(_text_hidden, text).eval(), (torch.ones(1, 77, dtype=torch.int64),), int8))
    tiny = type(vae).__name__ == "AutoencoderTiny"
    if tiny:
        encode_fn, decode_fn = (lambda v, x: v.encoder(x)), (lambda v, z: v.decoder(z))
    else:
        encode_fn, decode_fn = _kl_encode, _kl_decode
    src, tag = (vae_path, "taesd") if tiny else (model_path, "vae")
    parts += [("image encoder", cache_key(f"{tag}-encoder", src), Apply(encode_fn, vae).eval(),
               (torch.randn(1, 3, size[1], size[0]),), False),
              ("image decoder", cache_key(f"{tag}-decoder", src), Apply(decode_fn, vae).eval(),
               (torch.randn(1, int(unet.config.out_channels), h, w),), False)]
    done = load_all(parts, prec, say)
    _wrap_unet(unet, done["UNet"])
    if text is not None:
        _wrap_text(text, done["text encoder"])
    _wrap_vae(vae, done["image encoder"], done["image decoder"], tiny)
    return True


def load_all(parts: list, prec: str, say: Optional[Callable[[str], None]]) -> dict:
    """Each part's compiled model, by label; the ones not cached yet are converted with progress
    (to the progress_to listener). parts: (label, cache key, torch module, example, int8)."""
    todo = [p for p in parts if not (cache_dir() / p[1] / "model.xml").exists()]
    seconds = {p[1]: estimate_s(p[2]) for p in todo}
    total = sum(seconds.values()) or 1
    head = f"preparing the CPU engine, once (~{total} s)"
    listener, spent, n, out = _listener.get(), 0, 0, {}
    for label, key, module, example, int8 in parts:
        if key not in seconds:
            out[label] = load_or_convert(key, module, example, prec, say, int8=int8)
            continue
        n += 1
        text = f"{head}: {label}" + (f", {n} of {len(todo)}" if len(todo) > 1 else "")
        with _ticking(listener, text, spent / total, seconds[key] / total, seconds[key]):
            out[label] = load_or_convert(key, module, example, prec, say, int8=int8)
        spent += seconds[key]
    return out


def restore(pipe) -> None:
    """PyTorch again for `pipe`'s modules (what use_for changed is undone; the cache stays)."""
    for module, names in ((pipe.unet, ("forward",)), (getattr(pipe, "text_encoder", None), ("forward",)),
                          (pipe.vae, ("encode", "decode"))):
        if module is not None:
            for name in (*names, "openvino"):
                module.__dict__.pop(name, None)


def cache_size_bytes() -> int:
    d = cache_dir()
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0
