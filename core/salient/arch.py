"""BiRefNet (Zheng et al., "Bilateral Reference for High-Resolution Dichotomous Image Segmentation",
2024) written for Backdrop in plain torch, so the published checkpoints load by their state-dict key
names (strict) without running any code fetched at run time.

Structure and parameter names follow the upstream code, github.com/ZhengPeng7/BiRefNet
(models/birefnet.py, models/modules/*, models/backbones/swin_v1.py), MIT licence,
Copyright (c) 2024 ZhengPeng; this is a re-implementation of its inference path with the released
configuration: Swin v1 backbone run on the image and on its half-size copy (features concatenated),
three context features squeezed by one BasicDecBlk, decoder blocks with deformable ASPP,
image patches fed to every decoder stage, gradient-attention gates, BatchNorm everywhere.
Training-only heads (multi-scale supervision, gradient predictions) are kept so the keys match.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import deform_conv2d


@dataclass(frozen=True)
class Arch:
    """A BiRefNet configuration: the Swin backbone's shape, the decoder's widths, the input size."""
    embed_dim: int
    depths: tuple
    heads: tuple
    window: int
    inter: int = 64      # BasicDecBlk / SimpleConvs width (upstream: fixed 64)
    aspp: int = 256      # deformable ASPP branch width (upstream: 256)
    size: int = 1024     # square input side (upstream: 1024x1024)


ARCHS = {
    "birefnet-lite": Arch(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),         # swin_v1_t
    "birefnet": Arch(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),          # swin_v1_l
    "tiny": Arch(8, (2, 2, 2, 2), (1, 1, 2, 2), 4, inter=8, aspp=8, size=64),
}


# --- Swin v1 (the object-detection variant: padding to windows, one LayerNorm per output stage)

def _windows(x, w):
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def _unwindows(x, w, h, wd):
    c = x.shape[-1]
    x = x.view(-1, h // w, wd // w, w, w, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, wd, c)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    def __init__(self, dim, window, heads):
        super().__init__()
        self.heads, self.window = heads, window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        # persistent, as upstream: the checkpoints carry it
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask=None):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:      # (nW, N, N) per image -> (B_, 1, N, N)
            nw = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask[None, :, None]).expand(b // nw, -1, -1, -1, -1)
            bias = bias.reshape(b, self.heads, n, n)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, window, shift):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x, h, w, mask):
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        ws = self.window
        y = F.pad(y, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        hp, wp = y.shape[1:3]
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = _unwindows(self.attn(_windows(y, ws), mask if self.shift else None), ws, hp, wp)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y[:, :h, :w].reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x, h, w):
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    def __init__(self, dim, depth, heads, window, downsample):
        super().__init__()
        self.window, self.shift = window, window // 2
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2)
                                    for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def _mask(self, h, w, device):
        ws, s = self.window, self.shift
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        img = torch.zeros((1, hp, wp, 1), device=device)
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
                img[:, hs, wsl] = cnt
                cnt += 1
        m = _windows(img, ws).squeeze(-1)
        m = m[:, None, :] - m[:, :, None]
        return torch.zeros_like(m).masked_fill(m != 0, float("-inf"))

    def forward(self, x, h, w):
        mask = self._mask(h, w, x.device).to(x.dtype)
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 4, 4)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        h, w = x.shape[2:]
        x = self.proj(F.pad(x, (0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4)))
        return x


class SwinTransformer(nn.Module):
    def __init__(self, arch: Arch):
        super().__init__()
        self.patch_embed = PatchEmbed(arch.embed_dim)
        dims = [arch.embed_dim * 2 ** i for i in range(4)]
        self.layers = nn.ModuleList(BasicLayer(dims[i], arch.depths[i], arch.heads[i], arch.window, i < 3)
                                    for i in range(4))
        self.dims = dims
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(d))

    def forward(self, x):
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        outs = []
        for i, layer in enumerate(self.layers):
            out, x, nh, nw = layer(x, h, w)
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.view(b, h, w, self.dims[i]).permute(0, 3, 1, 2).contiguous())
            h, w = nh, nw
        return outs


# --- decoder parts

def _up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class DeformableConv2d(nn.Module):
    def __init__(self, cin, cout, k, padding):
        super().__init__()
        self.padding = padding
        self.offset_conv = nn.Conv2d(cin, 2 * k * k, k, 1, padding)
        self.modulator_conv = nn.Conv2d(cin, k * k, k, 1, padding)
        self.regular_conv = nn.Conv2d(cin, cout, k, 1, padding, bias=False)
        for m in (self.offset_conv, self.modulator_conv):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        return deform_conv2d(x, self.offset_conv(x), self.regular_conv.weight, self.regular_conv.bias,
                             padding=self.padding, mask=2.0 * torch.sigmoid(self.modulator_conv(x)))


class _ASPPBranch(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.atrous_conv = DeformableConv2d(cin, cout, k, k // 2)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPPDeformable(nn.Module):
    def __init__(self, cin, width):
        super().__init__()
        self.aspp1 = _ASPPBranch(cin, width, 1)
        self.aspp_deforms = nn.ModuleList(_ASPPBranch(cin, width, k) for k in (1, 3, 7))
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, width, 1, bias=False),
                                             nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.conv1 = nn.Conv2d(width * 5, cin, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)

    def forward(self, x):
        pooled = _up(self.global_avg_pool(x), x.shape[2:])
        x = torch.cat([self.aspp1(x), *[m(x) for m in self.aspp_deforms], pooled], 1)
        return F.relu(self.bn1(self.conv1(x)))


class BasicDecBlk(nn.Module):
    def __init__(self, cin, cout, arch: Arch):
        super().__init__()
        self.conv_in = nn.Conv2d(cin, arch.inter, 3, 1, 1)
        self.bn_in = nn.BatchNorm2d(arch.inter)
        self.dec_att = ASPPDeformable(arch.inter, arch.aspp)
        self.conv_out = nn.Conv2d(arch.inter, cout, 3, 1, 1)
        self.bn_out = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(self.bn_in(self.conv_in(x)))
        return self.bn_out(self.conv_out(self.dec_att(x)))


class BasicLatBlk(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x):
        return self.conv(x)


class SimpleConvs(nn.Module):
    def __init__(self, cin, cout, inter):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, inter, 3, 1, 1)
        self.conv_out = nn.Conv2d(inter, cout, 3, 1, 1)

    def forward(self, x):
        return self.conv_out(self.conv1(x))


def _patches(x, ref):
    """The image cut into a grid of ref's size, stacked on channels (upstream image2patches)."""
    gh, gw = x.shape[-2] // ref.shape[-2], x.shape[-1] // ref.shape[-1]
    b, c, h, w = x.shape
    x = x.view(b, c, gh, h // gh, gw, w // gw).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, c * gh * gw, h // gh, w // gw)


class Decoder(nn.Module):
    def __init__(self, ch, arch: Arch):
        super().__init__()
        ipt_out = [c // 8 for c in ch]
        for name, cin, cout in zip(("ipt_blk5", "ipt_blk4", "ipt_blk3", "ipt_blk2", "ipt_blk1"),
                                   [2 ** i * 3 for i in (10, 8, 6, 4, 0)], [ipt_out[0]] + ipt_out):
            self.add_module(name, SimpleConvs(cin, cout, arch.inter))
        out = ch[1:] + [ch[-1] // 2]
        cin = [ch[i] + ipt_out[max(0, i - 1)] for i in range(4)]
        for i in range(4):
            self.add_module(f"decoder_block{4 - i}", BasicDecBlk(cin[i], out[i], arch))
        self.conv_out1 = nn.Sequential(nn.Conv2d(out[3] + ipt_out[3], 1, 1, 1, 0))
        for i in range(3):
            self.add_module(f"lateral_block{4 - i}", BasicLatBlk(ch[i + 1], out[i]))
        for i, n in zip(range(3), (4, 3, 2)):
            self.add_module(f"conv_ms_spvn_{n}", nn.Conv2d(out[i], 1, 1, 1, 0))   # training only
            self.add_module(f"gdt_convs_{n}", nn.Sequential(nn.Conv2d(out[i], 16, 3, 1, 1),
                                                            nn.BatchNorm2d(16), nn.ReLU(inplace=True)))
            self.add_module(f"gdt_convs_pred_{n}", nn.Sequential(nn.Conv2d(16, 1, 1, 1, 0)))  # training only
            self.add_module(f"gdt_convs_attn_{n}", nn.Sequential(nn.Conv2d(16, 1, 1, 1, 0)))

    def _stage(self, n, p, x):
        ipt = getattr(self, f"ipt_blk{n}")
        return torch.cat((p, ipt(_up(_patches(x, p), p.shape[2:]))), 1)

    def _gate(self, n, p):
        return p * getattr(self, f"gdt_convs_attn_{n}")(getattr(self, f"gdt_convs_{n}")(p)).sigmoid()

    def forward(self, x, x1, x2, x3, x4):
        p = self._gate(4, self.decoder_block4(self._stage(5, x4, x)))
        p = _up(p, x3.shape[2:]) + self.lateral_block4(x3)
        p = self._gate(3, self.decoder_block3(self._stage(4, p, x)))
        p = _up(p, x2.shape[2:]) + self.lateral_block3(x2)
        p = self._gate(2, self.decoder_block2(self._stage(3, p, x)))
        p = _up(p, x1.shape[2:]) + self.lateral_block2(x1)
        p = _up(self.decoder_block1(self._stage(2, p, x)), x.shape[2:])
        return self.conv_out1(self._stage(1, p, x))


class BiRefNet(nn.Module):
    """Image (B, 3, S, S), ImageNet-normalised -> logits (B, 1, S, S) of the salient object."""

    def __init__(self, arch: Arch):
        super().__init__()
        self.bb = SwinTransformer(arch)
        c = arch.embed_dim
        ch = [c * 16, c * 8, c * 4, c * 2]          # per stage, doubled by the half-size pass
        self.squeeze_module = nn.Sequential(BasicDecBlk(ch[0] + sum(ch[1:]), ch[0], arch))
        self.decoder = Decoder(ch, arch)

    def forward(self, x):
        full = self.bb(x)
        half = self.bb(_up(x, (x.shape[2] // 2, x.shape[3] // 2)))
        x1, x2, x3, x4 = [torch.cat([f, _up(g, f.shape[2:])], 1) for f, g in zip(full, half)]
        x4 = torch.cat([_up(x1, x4.shape[2:]), _up(x2, x4.shape[2:]), _up(x3, x4.shape[2:]), x4], 1)
        return self.decoder(x, x1, x2, x3, self.squeeze_module(x4))
