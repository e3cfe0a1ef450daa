"""Fast mode's add-ons: which few-step LoRA and tiny autoencoder (TAESD) a request uses, checked
on disk; loading the tiny autoencoder; fusing the LoRA into a pipeline's UNet."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from core import weights
from core.errors import InvalidOptionError, MissingWeightsError
from core.spec import Generation


@dataclass(frozen=True)
class FastParts:
    """What fast mode puts on a model: the family, the LoRA's and the tiny autoencoder's specs."""
    family: str
    lora: "weights.ModelSpec"
    autoencoder: "weights.ModelSpec"


def _family_name(family: Optional[str]) -> str:
    return weights.FAMILY_NAMES.get(family or "", "an architecture Backdrop does not know")


def fast_parts(model: str, lora: Optional[str] = None, scheduler: Optional[str] = "lcm") -> FastParts:
    """The LoRA and tiny autoencoder fast mode uses on `model` (checked present). `lora` None = the
    family's own for `scheduler`. Raises InvalidOptionError (no LoRA for the family, a LoRA of
    another family, not a LoRA) or MissingWeightsError (an add-on not downloaded), one line each."""
    family = weights.model_family(model)
    if family is None:
        weights.resolve(model, "inpaint")          # not downloaded: that error (with its command)
    name = lora or weights.fast_lora(family, scheduler)
    if name is None:
        raise InvalidOptionError(f"fast mode has no few-step LoRA for model {model!r} "
                                 f"({_family_name(family)}); use mode quality")
    lspec = weights.get_spec(name, "fast")         # unknown name: "unknown fast model ...; known: ..."
    if lspec.kind not in ("lora", "tiny-lora"):
        raise InvalidOptionError(f"{name!r} is not a few-step LoRA (it is {lspec.description})")
    if lspec.family != family:
        raise InvalidOptionError(f"LoRA {name!r} is for {_family_name(lspec.family)} but model "
                                 f"{model!r} is {_family_name(family)}")
    aname = weights.tiny_autoencoder(family)
    if aname is None:
        raise InvalidOptionError(f"fast mode has no tiny autoencoder for model {model!r} "
                                 f"({_family_name(family)}); use mode quality")
    aspec = weights.get_spec(aname, "fast")
    for spec in (lspec, aspec):
        if not weights.is_present(spec):
            raise MissingWeightsError(f"fast mode needs {spec.name!r} ({spec.description}): "
                                      + weights.missing_message(spec))
    return FastParts(family, lspec, aspec)


def resolve_generation(gen: Generation) -> Generation:
    """The generation as it will really run: for mode fast, `lora` filled in with the registry name
    of the LoRA used (the model family's own when None) after checking that it and the tiny
    autoencoder are on disk; quality requests come back unchanged. Raises MissingWeightsError (an
    add-on missing; the line names `python -m core models download NAME`) or InvalidOptionError
    (no LoRA for the model's family, a LoRA of another family). Loads no weights."""
    if gen.mode != "fast":
        return gen
    parts = fast_parts(gen.model, gen.lora, gen.scheduler)
    return gen if gen.lora == parts.lora.name else gen.model_copy(update={"lora": parts.lora.name})


def _first_line(e: BaseException, prefer: str = "") -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    return (next((ln for ln in lines if prefer and prefer in ln), lines[0]))[:240]


def load_taesd(spec, dtype):
    from diffusers import AutoencoderTiny
    path = weights.local_path(spec)
    try:
        return AutoencoderTiny.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
    except Exception as e:
        raise MissingWeightsError(f"could not load the tiny autoencoder {spec.name!r} from {path}: "
                                  f"{_first_line(e)}; re-download it with "
                                  f"`python -m core models download {spec.name}`") from None


def fuse_lora(pipe, spec, model: str) -> None:
    """load_lora_weights + fuse_lora + unload (the fused weights stay, the LoRA layers go).
    A file that cannot be read: MissingWeightsError; one that does not fit the UNet:
    InvalidOptionError. On error the pipeline is half-modified: the caller must drop it."""
    from safetensors.torch import load_file
    path = weights.lora_file(spec)
    try:
        state = load_file(str(path))
    except Exception as e:
        raise MissingWeightsError(f"LoRA {spec.name!r} at {path} cannot be read ({_first_line(e)}); "
                                  f"re-download it with `python -m core models download {spec.name}`") from None
    try:
        pipe.load_lora_weights(state, adapter_name="fast")
        if "fast" not in sum(pipe.get_list_adapters().values(), []):
            raise ValueError("none of its layers matches the model")
        pipe.fuse_lora(lora_scale=1.0, adapter_names=["fast"])
        pipe.unload_lora_weights()
    except Exception as e:
        raise InvalidOptionError(f"LoRA {spec.name!r} does not fit model {model!r}: "
                                 f"{_first_line(e, 'mismatch')}") from None
