"""The tiny BiRefNet for tests: the real architecture (core.salient.arch) at widths of 8, a 64 px
input, random weights, saved as model.safetensors the way the published checkpoints are."""
from __future__ import annotations

import os
from pathlib import Path


def build_tiny_birefnet_model(seed: int = 0):
    """A random-initialised tiny BiRefNet (a few hundred thousand weights), eval mode."""
    import torch
    from core.salient.arch import ARCHS, BiRefNet
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BiRefNet(ARCHS["tiny"])
        # random weights everywhere (upstream zero-inits the deformable offsets)
        for p in model.parameters():
            if not p.abs().sum():
                torch.nn.init.normal_(p, std=0.05)
        with torch.no_grad():       # a wide output so the mask has confident pixels on both sides
            model.decoder.conv_out1[0].weight.mul_(300)
    return model.eval()


def build_tiny_birefnet(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny model's model.safetensors into `folder` (atomically); returns `folder`."""
    from safetensors.torch import save_file
    from core.tiny import _save_folder

    def write(tmp: Path) -> None:
        state = {k: v.contiguous() for k, v in build_tiny_birefnet_model(seed).state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))

    return _save_folder(Path(folder), "model.safetensors", write)
