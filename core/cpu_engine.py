"""The CPU engine: the inpainting UNet (fast LoRA already fused) and the autoencoder (TAESD or the
full VAE) run through OpenVINO instead of PyTorch on a CPU, several times faster on the same cores.

    from core import cpu_engine
    cpu_engine.use_for(pipe, model="sd15-inpainting", lora="lcm-sd15", device="cpu")

`use_for` converts each module once (`openvino.convert_model` from the torch module), saves the
result under <weights dir>/cpu-engine/<hash>/ (the hash names the model folder, its files' sizes
and times, the LoRA, the component and the OpenVINO version; shapes stay dynamic, so one engine
serves every size), and the next load reads it back in about a second. A damaged cache folder is
rebuilt with one warning line. The pipeline keeps calling `pipe.unet(...)` / `pipe.vae.decode(...)`
as before: each module's forward is replaced by a call of the compiled model.

Precision: bf16 where the CPU runs it natively (AMX or avx512_bf16, OpenVINO's "BF16" capability),
fp32 elsewhere. BACKDROP_CPU_BACKEND picks `torch` (the old path), `openvino` or `auto` (OpenVINO
when it is installed and the device is the CPU). GPUs and MPS never use it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger("backdrop.cpu_engine")

# Say "preparing the CPU engine, once, ~N s": a conversion takes about this many seconds per
# million parameters on 2 cores (measured: SD 1.5's UNet, 860 M, ~100 s).
_SECONDS_PER_MPARAM = 0.12


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


def _core():
    import openvino as ov
    return ov.Core()


def _compile(model, prec: str):
    import torch
    config = {"INFERENCE_PRECISION_HINT": prec, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": max(1, torch.get_num_threads())}
    return _core().compile_model(model, "CPU", config)


def load_or_convert(key: str, module, example: tuple, prec: str,
                    say: Optional[Callable[[str], None]] = None):
    """The compiled model of `module` (a torch module taking `example`'s tensors), read from the
    cache folder `key` or converted and saved there first (atomically: a temp folder renamed)."""
    import openvino as ov
    import torch
    folder = cache_dir() / key
    xml = folder / "model.xml"
    if xml.exists():
        try:
            return _compile(_core().read_model(str(xml)), prec)
        except Exception as e:
            log.warning("the cached CPU engine %s is damaged (%s); rebuilding it", folder,
                        str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__)
            shutil.rmtree(folder, ignore_errors=True)
    params = sum(p.numel() for p in module.parameters()) / 1e6
    msg = f"preparing the CPU engine, once, ~{max(1, round(params * _SECONDS_PER_MPARAM))} s ({key})"
    log.info(msg)
    if say is not None:
        say(msg)
    t0 = time.perf_counter()
    with torch.no_grad():
        model = ov.convert_model(module, example_input=example)
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
    out = compiled([np.ascontiguousarray(a.detach().float().cpu().numpy()) for a in arrays])
    return torch.from_numpy(np.array(out[0]))


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


class _Apply(__import__("torch").nn.Module):
    def __init__(self, fn, owner):
        super().__init__()
        self.owner = owner
        self.fn = fn

    def forward(self, x):
        return self.fn(self.owner, x)


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
            say: Optional[Callable[[str], None]] = None, size: tuple[int, int] = (512, 384)) -> bool:
    """Run `pipe`'s UNet and autoencoder through OpenVINO (converted once, cached; see the module
    docstring). False (nothing changed) for a UNet the engine does not take (SDXL's extra
    conditioning). `size` (w, h) only shapes the example inputs of the conversion."""
    import torch
    unet, vae = pipe.unet, pipe.vae
    if getattr(unet.config, "addition_embed_type", None) or unet.config.time_cond_proj_dim:
        return False
    prec = prec or precision()
    f = int(pipe.vae_scale_factor)
    w, h = size[0] // f, size[1] // f
    ch = int(unet.config.in_channels)
    ehs = torch.zeros(1, 77, int(unet.config.cross_attention_dim))
    example = (torch.randn(1, ch, h, w), torch.tensor([999.0]), ehs)
    unet_c = load_or_convert(cache_key("unet", model_path, lora), _UNetCall(unet).eval(),
                             example, prec, say)
    tiny = type(vae).__name__ == "AutoencoderTiny"
    lat = int(unet.config.out_channels)
    if tiny:
        encode_fn, decode_fn = (lambda v, x: v.encoder(x)), (lambda v, z: v.decoder(z))
    else:
        encode_fn, decode_fn = _kl_encode, _kl_decode
    src = vae_path if tiny else model_path
    tag = "taesd" if tiny else "vae"
    enc_c = load_or_convert(cache_key(f"{tag}-encoder", src), _Apply(encode_fn, vae).eval(),
                            (torch.randn(1, 3, size[1], size[0]),), prec, say)
    dec_c = load_or_convert(cache_key(f"{tag}-decoder", src), _Apply(decode_fn, vae).eval(),
                            (torch.randn(1, lat, h, w),), prec, say)
    _wrap_unet(unet, unet_c)
    _wrap_vae(vae, enc_c, dec_c, tiny)
    return True


def cache_size_bytes() -> int:
    d = cache_dir()
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0
