"""The built-in `tiny` test models: random-initialised, built in code, never downloaded.

    build_tiny_sam(path)        the tiny SAM's state_dict, saved like an official .pth checkpoint
    build_tiny_inpaint(path)    the tiny SD inpainting pipeline, saved with save_pretrained
    build_tiny_lora(folder)     a random LoRA (peft) for the tiny UNet, saved with save_lora_weights
    build_tiny_taesd(folder)    a tiny AutoencoderTiny (TAESD's class, 2x scale), save_pretrained
    build_tiny_vitmatte(folder) a tiny ViTMatte (transformers) + its image processor, save_pretrained
    build_tiny_sam_hq(folder)   a tiny SAM-HQ (transformers SamHQModel) + SamHQProcessor, save_pretrained

`core.weights.download("tiny", task)` calls these; the models are then loaded back through the same
code as the real ones (`core.segment.load_sam`, `core.inpaint.Inpainter.load`, which loads the
fast-mode LoRA and tiny autoencoder of the registry the same way for real and tiny ones;
`core.vitmatte` and `core.segment.samhq.load_sam_hq` read the tiny transformers folders with the
same `from_pretrained` calls as the hub snapshots). Both are
deterministic (seeded inside `torch.random.fork_rng`, so the caller's global RNG state is left
alone) and need no network: the tokenizer is built from a small local vocabulary too.

Only the standard library and core.errors / core.files are imported at module level, so
core.weights can import this module without an import cycle; torch, segment_anything, diffusers
and transformers are imported inside the functions.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from core.errors import InvalidOptionError
from core.files import atomic_write_bytes
from core.log import quiet_transformers

__all__ = ["build_tiny_sam_model", "build_tiny_sam", "build_tiny_pipeline", "build_tiny_inpaint",
           "tiny_lora_layers", "build_tiny_lora", "build_tiny_taesd", "build_tiny_vitmatte_model",
           "build_tiny_vitmatte", "build_tiny_sam_hq_model", "build_tiny_sam_hq"]


# ----------------------------------------------------------------------------- SAM
def _build_tiny_sam_model(checkpoint=None):
    """A small random-initialised SAM: ViT encoder with embed_dim 32, depth 2, 2 heads, but the
    official 1024 input / 16 px patches, so the embedding is 256x64x64 and the prompt encoder and
    mask decoder see exactly the shapes of the real models. Same signature as the builders in
    `segment_anything.sam_model_registry`; weights are loaded by `core.segment.load_sam`, so
    `checkpoint` must be None."""
    if checkpoint is not None:
        raise InvalidOptionError("the tiny SAM builder loads no checkpoint itself; use load_sam")
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    prompt_dim, image_size, patch = 256, 1024, 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=2, embed_dim=32, img_size=image_size, mlp_ratio=2,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=(), window_size=8,
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim, image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size), mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_tiny_sam_model(seed: int = 0):
    """The tiny SAM with deterministic random weights (`seed`), without touching global RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_tiny_sam_model()
        # Real checkpoints have non-zero positional embeddings; give the tiny one some too.
        torch.nn.init.normal_(model.image_encoder.pos_embed, std=0.02)
    return model


def build_tiny_sam(path, seed: int = 0) -> Path:
    """Save the tiny SAM's state_dict (torch.save, like the official .pth files) to `path`.

    `get_segmenter("tiny")` then loads it back through `load_sam`, the code path of the official
    checkpoints. Deterministic: the same seed gives the same bytes' worth of weights.
    """
    import torch

    buf = io.BytesIO()
    torch.save(build_tiny_sam_model(seed).state_dict(), buf)
    return atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- SD inpainting
def _tiny_tokenizer(folder: Path):
    import string

    from transformers import CLIPTokenizer
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,!?-'":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def build_tiny_pipeline():
    """A random-initialised (seed 0) tiny SD inpainting pipeline, built in code with no network."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    with tempfile.TemporaryDirectory() as tok_dir, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # inside fork_rng: the caller's global RNG state is restored after
        tokenizer = _tiny_tokenizer(Path(tok_dir))
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=9,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
        vae = AutoencoderKL(
            block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
            num_attention_heads=4, num_hidden_layers=2, layer_norm_eps=1e-5,
            vocab_size=len(tokenizer.get_vocab())))
        return StableDiffusionInpaintPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _save_folder(path: Path, marker: str, write) -> Path:
    """write(tmp) into a temp folder beside `path`, then rename it into place (atomic). A folder
    already holding `marker` is kept as is."""
    path = Path(path)
    if (path / marker).is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path / marker).is_file():  # someone else finished first otherwise
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_tiny_inpaint(path: str | os.PathLike) -> Path:
    """Build the tiny pipeline and save_pretrained it to `path` (atomically: a temp folder beside it,
    then renamed). Returns `path`; an already-built folder is kept as is."""
    return _save_folder(Path(path), "model_index.json",
                        lambda tmp: build_tiny_pipeline().save_pretrained(str(tmp)))


# ----------------------------------------------------------------------------- fast-mode add-ons
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]    # the attention projections, as LCM-LoRA


def tiny_lora_layers(unet, rank: int = 4, seed: int = 0) -> dict:
    """A random-initialised LoRA (peft, rank `rank`, on the attention projections) for `unet`, as
    the diffusers-format state dict `save_lora_weights(unet_lora_layers=...)` takes. The LoRA
    layers are added to `unet` to build the dict and removed again, leaving it as it was. B is not
    zero (init_lora_weights=False), so the LoRA really changes the UNet's output."""
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS,
                                    init_lora_weights=False), adapter_name="tiny")
    try:
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name="tiny"))
        return {k: v.detach().clone().contiguous() for k, v in layers.items()}
    finally:
        unet.unload_lora()          # the peft wrappers go too: the UNet's own keys are unchanged


def build_tiny_lora(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a random LoRA for the tiny test UNet with `save_lora_weights` into `folder`
    (pytorch_lora_weights.safetensors, the file name of LCM-LoRA's repo). Returns `folder`."""
    from diffusers import StableDiffusionInpaintPipeline

    def write(tmp: Path) -> None:
        layers = tiny_lora_layers(build_tiny_pipeline().unet, seed=seed)
        StableDiffusionInpaintPipeline.save_lora_weights(str(tmp), unet_lora_layers=layers)

    return _save_folder(Path(folder), "pytorch_lora_weights.safetensors", write)


def build_tiny_taesd_model(seed: int = 0):
    """An AutoencoderTiny (TAESD's class) small enough for the tiny pipeline: 4 latent channels,
    two blocks each way, so 2x down/up-scaling like the tiny pipeline's AutoencoderKL."""
    import torch
    from diffusers import AutoencoderTiny
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderTiny(encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16),
                               num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4)


def build_tiny_taesd(folder: str | os.PathLike, seed: int = 0) -> Path:
    """save_pretrained the tiny AutoencoderTiny into `folder` (config.json + safetensors, the
    layout of madebyollin/taesd). Returns `folder`."""
    return _save_folder(Path(folder), "diffusion_pytorch_model.safetensors",
                        lambda tmp: build_tiny_taesd_model(seed).save_pretrained(str(tmp)))


# ----------------------------------------------------------------------------- matting / SAM-HQ (transformers)
def _save_quietly(obj, folder: Path) -> None:
    """obj.save_pretrained(folder) without transformers' "Writing model shards" bar."""
    with quiet_transformers():
        obj.save_pretrained(str(folder))


def build_tiny_vitmatte_model(seed: int = 0):
    """A random-initialised ViTMatte with the real model's geometry (16 px patches on a 4-channel
    RGB + trimap input, three stride-2 ConvStream stages, four fusion stages back to full size,
    windowed attention with one global block) but widths of 8-16 channels: a few thousand weights."""
    import torch
    from transformers import VitDetConfig, VitMatteConfig, VitMatteForImageMatting
    backbone = VitDetConfig(image_size=64, patch_size=16, num_channels=4, hidden_size=16,
                            num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                            window_size=2, window_block_indices=[0], residual_block_indices=[],
                            use_relative_position_embeddings=True, out_features=["stage2"],
                            initializer_range=0.2)
    config = VitMatteConfig(backbone_config=backbone, hidden_size=16, convstream_hidden_sizes=[8, 8, 16],
                            fusion_hidden_sizes=[16, 16, 8, 8], initializer_range=0.2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VitMatteForImageMatting(config)
    # With transformers' default init (weights and BatchNorm scales ~N(0, 0.02)) a model this narrow
    # gives alpha 0.5 +- 1e-4 everywhere; wider weights (0.2) and unit BatchNorm scales (torch's
    # default) give alphas spread over 0..1 that depend on the image and the trimap.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    return model.eval()


def build_tiny_vitmatte(folder: str | os.PathLike, seed: int = 0) -> Path:
    """save_pretrained the tiny ViTMatte and a default `VitMatteImageProcessor` (pads to a multiple
    of 32) into `folder`: the layout of hustvl/vitmatte-small-composition-1k. Returns `folder`."""
    from transformers import VitMatteImageProcessor

    def write(tmp: Path) -> None:
        VitMatteImageProcessor().save_pretrained(str(tmp))
        _save_quietly(build_tiny_vitmatte_model(seed), tmp)     # config.json last: the marker

    return _save_folder(Path(folder), "config.json", write)


def build_tiny_sam_hq_model(seed: int = 0):
    """A random-initialised SAM-HQ (transformers `SamHQModel`): the official 1024 px input and 16 px
    patches, so embeddings are 64x64 and the 256x256 low-res masks cover the padded square like the
    real ones, but a 2-layer ViT of width 32 (one windowed, one global block: the global block's
    output is the intermediate embedding SAM-HQ's decoder fuses) and 32-d prompts and decoder."""
    import torch
    from transformers import (SamHQConfig, SamHQMaskDecoderConfig, SamHQModel, SamHQPromptEncoderConfig,
                              SamHQVisionConfig)
    dim = 32
    config = SamHQConfig(
        vision_config=SamHQVisionConfig(hidden_size=dim, output_channels=dim, num_hidden_layers=2,
                                        num_attention_heads=2, mlp_dim=64, window_size=8,
                                        global_attn_indexes=[1], num_pos_feats=dim // 2),
        prompt_encoder_config=SamHQPromptEncoderConfig(hidden_size=dim, mask_input_channels=4),
        mask_decoder_config=SamHQMaskDecoderConfig(hidden_size=dim, mlp_dim=64, num_attention_heads=2,
                                                   iou_head_hidden_dim=32, vit_dim=dim),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamHQModel(config)
        # Real checkpoints have non-zero positional embeddings; give the tiny one some too.
        torch.nn.init.normal_(model.vision_encoder.pos_embed, std=0.02)
    return model.eval()


def build_tiny_sam_hq(folder: str | os.PathLike, seed: int = 0) -> Path:
    """save_pretrained the tiny SAM-HQ and a `SamHQProcessor` (SAM's image processor: longest side
    to 1024, padded square) into `folder`: the layout of syscv-community/sam-hq-vit-base."""
    from transformers import SamHQProcessor, SamImageProcessor

    def write(tmp: Path) -> None:
        SamHQProcessor(SamImageProcessor()).save_pretrained(str(tmp))
        _save_quietly(build_tiny_sam_hq_model(seed), tmp)       # config.json last: the marker

    return _save_folder(Path(folder), "config.json", write)
