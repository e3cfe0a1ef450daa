"""SAM's mask decoder with its image-only half done once per image (the click path of core.segment,
for SAM and SAM 2.1 alike).

The mask decoders of `segment_anything` (SAM) and transformers' `Sam2Model` (SAM 2.1) redo, on
every click, work that depends only on the image: adding the constant no-mask embedding to 4096
image tokens, building the dense positional encoding, copying image tensors per prompt batch, and
the first transformer layer's key, value and query projections of the image tokens. `prepare` does
that once, when the embedding is cached; `decode` runs the rest. It is the same computation on the
same weights (results agree to float rounding; tests/unit/test_segment.py compares both models with
their own decoders). The upscaling also runs in channels-last layout with a native layer norm,
2-3x faster on CPU than the channels-first layout the models use.

Both decoders are the same two-way transformer under different attribute names; SAM 2.1 adds an
object-score token, skip connections from two high-resolution feature maps into the upscaling,
and picks a single mask by stability. Only prompts without a mask input are handled (Backdrop never
passes one); `for_sam` / `for_sam2` return None for a decoder this does not mirror, and core.segment
then uses the model's own. That includes a decoder whose parts this module cannot find: it reads
attributes the libraries do not promise to keep (transformers' private module classes and
methods), so a missing or renamed one while setting up (AttributeError, TypeError, KeyError) logs a
warning and falls back to the model's own decoder instead of failing the model's load. Everything
`decode` needs is looked up in `FastMaskDecoder.__init__`, so a click never hits a missing name.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: What a library change makes setting up the fast decoder raise (missing/renamed parts).
_SETUP_ERRORS = (AttributeError, TypeError, KeyError)


@dataclass(frozen=True, eq=False)
class ImageState:
    """What one image contributes to every click: (1, HW, C) tokens and layer-0 projections."""
    keys: torch.Tensor       # image tokens + no-mask embedding, (1, HW, C)
    t2i_k: torch.Tensor      # layer 0, tokens -> image: keys (1, heads, HW, c)
    t2i_v: torch.Tensor      #                          values (1, heads, HW, c)
    i2t_q: torch.Tensor      # layer 0, image -> tokens: queries (1, heads, HW, c)
    hw: tuple[int, int]      # embedding grid (h, w)
    skips: tuple = ()        # SAM 2.1: high-res features added after each upscaling conv, channels-last


def _get(module, *names):
    """The first attribute of `module` among `names` (SAM and SAM 2.1 name the same parts differently)."""
    for name in names:
        value = getattr(module, name, None)
        if value is not None:
            return value
    raise AttributeError(f"{type(module).__name__} has none of {names}")


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


class _Attention:
    """One attention module's projections, for either naming (SAM: out_proj/num_heads, SAM 2.1:
    o_proj/num_attention_heads). Both scale by 1/sqrt(head dim), as scaled_dot_product_attention."""

    def __init__(self, attn):
        self.q_proj, self.k_proj, self.v_proj = attn.q_proj, attn.k_proj, attn.v_proj
        self.out_proj = _get(attn, "out_proj", "o_proj")
        self.n = int(_get(attn, "num_heads", "num_attention_heads"))

    def q(self, x):
        return _heads(self.q_proj(x), self.n)

    def k(self, x):
        return _heads(self.k_proj(x), self.n)

    def v(self, x):
        return _heads(self.v_proj(x), self.n)

    def attend(self, q, k, v):
        """Attention on projected, head-split q, k, v, then the output projection."""
        out = F.scaled_dot_product_attention(q, k, v)        # softmax(q k^T / sqrt(c)) v
        b, n, t, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, n * c))

    def __call__(self, q_in, k_in, v_in):
        return self.attend(self.q(q_in), self.k(k_in), self.v(v_in))


class _Layer:
    def __init__(self, layer):
        self.self_attn = _Attention(layer.self_attn)
        self.t2i = _Attention(layer.cross_attn_token_to_image)
        self.i2t = _Attention(layer.cross_attn_image_to_token)
        self.mlp = layer.mlp
        self.norms = [_get(layer, f"norm{i}", f"layer_norm{i}") for i in (1, 2, 3, 4)]
        self.skip_pe = bool(layer.skip_first_layer_pe)


class FastMaskDecoder:
    """`decode(prepare(features), sparse, multimask)` == the model's decoder with no mask input.

    The positional encoding, no-mask embedding and output tokens are copied when it is built: build
    it after the model is on its device and dtype with its weights loaded (core.segment does)."""

    def __init__(self, decoder, dense_pe, no_mask, output_tokens, iou_index: int, upscaling,
                 stability_select: bool = False):
        self.dec = decoder
        self.num_mask_tokens = int(decoder.num_mask_tokens)
        self.hypernetworks = list(decoder.output_hypernetworks_mlps)
        self.iou_head = decoder.iou_prediction_head
        # SAM 2.1: an unstable single mask -> best candidate (a private method of transformers)
        self.stability = decoder._dynamic_multimask_via_stability if stability_select else None
        tr = decoder.transformer
        self.layers = [_Layer(layer) for layer in tr.layers]
        self.final = _Attention(tr.final_attn_token_to_image)
        self.final_norm = _get(tr, "norm_final_attn", "layer_norm_final_attn")
        with torch.inference_mode():
            self.pe = dense_pe.flatten(2).transpose(1, 2).contiguous()      # (1, HW, C), constant
            self.no_mask = no_mask.reshape(1, 1, -1).clone()
            self.output_tokens = output_tokens[None].clone()                # (1, K, C)
        self.iou_index = iou_index                  # mask tokens follow the IoU token
        self.conv1, self.up_norm, self.act1, self.conv2, self.act2 = upscaling
        self.up_norm_args = (self.up_norm.weight, self.up_norm.bias, self.up_norm.eps)
        with torch.inference_mode(False):       # the model's weights stay ordinary tensors
            self.conv1.to(memory_format=torch.channels_last)
            self.conv2.to(memory_format=torch.channels_last)

    def prepare(self, features: torch.Tensor, skips: tuple = ()) -> ImageState:
        """The image-only work for (1, C, h, w) encoder features: 10 MB per image (float32)."""
        layer = self.layers[0]
        with torch.inference_mode():
            keys = (features.flatten(2).transpose(1, 2) + self.no_mask).contiguous()
            kpe = keys + self.pe
            return ImageState(
                keys=keys,
                t2i_k=layer.t2i.k(kpe).contiguous(),
                t2i_v=layer.t2i.v(keys).contiguous(),
                i2t_q=layer.i2t.q(kpe).contiguous(),
                hw=tuple(features.shape[-2:]),
                skips=tuple(s.contiguous(memory_format=torch.channels_last) for s in skips),
            )

    def decode(self, state: ImageState, sparse: torch.Tensor, multimask: bool):
        """(low-res logits (1, N, 4h, 4w), iou predictions (1, N)) for one prompt's (1, T, C)
        sparse embedding: the 3 multimask candidates, or the single-mask output."""
        if sparse.dim() != 3 or sparse.shape[0] != 1:
            raise ValueError(f"one prompt at a time: sparse embedding must be (1, T, C), got {tuple(sparse.shape)}")
        with torch.inference_mode():
            masks, iou = self._predict(state, sparse)
            if multimask:
                return masks[:, 1:], iou[:, 1:]
            if self.stability is not None:      # SAM 2.1: an unstable single mask -> best candidate
                masks, iou = self.stability(masks[:, None], iou[:, None])
                return masks[:, 0], iou[:, 0]
            return masks[:, :1], iou[:, :1]

    def _predict(self, state: ImageState, sparse: torch.Tensor):
        pe = self.pe
        tokens = torch.cat((self.output_tokens.to(sparse.dtype), sparse), dim=1)     # (1, T, C)
        queries, keys = tokens, state.keys
        for i, layer in enumerate(self.layers):
            n1, n2, n3, n4 = layer.norms
            # (1) self-attention of the prompt tokens
            if layer.skip_pe:
                queries = layer.self_attn(queries, queries, queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q, q, queries)
            queries = n1(queries)
            # (2) tokens attend to the image; layer 0's image side was done in `prepare`
            if i == 0:
                k, v, q_img = state.t2i_k, state.t2i_v, state.i2t_q
            else:
                kpe = keys + pe
                k, v, q_img = layer.t2i.k(kpe), layer.t2i.v(keys), layer.i2t.q(kpe)
            queries = n2(queries + layer.t2i.attend(layer.t2i.q(queries + tokens), k, v))
            # (3) MLP on the tokens
            queries = n3(queries + layer.mlp(queries))
            # (4) the image attends to the tokens
            attn = layer.i2t.attend(q_img, layer.i2t.k(queries + tokens), layer.i2t.v(queries))
            keys = n4(keys + attn)
        attn = self.final(queries + tokens, keys + pe, keys)
        queries = self.final_norm(queries + attn)

        m0 = self.iou_index + 1
        mask_tokens_out = queries[:, m0:m0 + self.num_mask_tokens, :]
        h, w = state.hw
        b, _, c = keys.shape
        up = self._upscale(keys.transpose(1, 2).view(b, c, h, w), state.skips)  # channels-last view
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.hypernetworks)],
                               dim=1)
        b, c, uh, uw = up.shape
        masks = (hyper_in @ up.reshape(b, c, uh * uw)).view(b, -1, uh, uw)
        return masks, self.iou_head(queries[:, self.iou_index, :])

    def _upscale(self, x: torch.Tensor, skips: tuple) -> torch.Tensor:
        """ConvT (+ skip), layer norm over channels, act, ConvT (+ skip), act; NHWC throughout."""
        s1, s0 = skips if skips else (None, None)
        x = self.conv1(x)
        if s1 is not None:
            x = x + s1
        weight, bias, eps = self.up_norm_args
        x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps)
        x = self.conv2(self.act1(x.permute(0, 3, 1, 2)))
        if s0 is not None:
            x = x + s0
        return self.act2(x)


def _guarded(kind: str, build, model: Any) -> Optional[FastMaskDecoder]:
    """build(model), or None with a warning when the library no longer has a part it reads."""
    try:
        return build(model)
    except _SETUP_ERRORS as e:
        log.warning("%s: the fast click path is off (%s: %s); using the model's own mask decoder, "
                    "correct but slower per click", kind, type(e).__name__, e, exc_info=True)
        return None


def for_sam(model: Any) -> Optional[FastMaskDecoder]:
    """The fast decoder for a segment_anything `Sam`, or None if its decoder is not the standard one
    (or has parts this module cannot find: see the module docstring)."""
    try:
        from segment_anything.modeling.common import LayerNorm2d
        from segment_anything.modeling.mask_decoder import MaskDecoder
        from segment_anything.modeling.transformer import TwoWayTransformer
    except ImportError:     # pragma: no cover - segment_anything is a requirement
        return None

    def build(model):
        dec = getattr(model, "mask_decoder", None)
        if type(dec) is not MaskDecoder or type(dec.transformer) is not TwoWayTransformer:
            return None
        up = dec.output_upscaling
        if not (dec.transformer.layers and dec.transformer.layers[0].skip_first_layer_pe
                and len(up) == 5 and isinstance(up[1], LayerNorm2d)):
            return None
        pe = model.prompt_encoder
        with torch.inference_mode():
            dense_pe, tokens = pe.get_dense_pe(), torch.cat([dec.iou_token.weight, dec.mask_tokens.weight])
        return FastMaskDecoder(dec, dense_pe, pe.no_mask_embed.weight, tokens, iou_index=0,
                               upscaling=tuple(up))

    return _guarded("SAM", build, model)


def for_sam2(model: Any) -> Optional[FastMaskDecoder]:
    """The fast decoder for a transformers `Sam2Model`, or None if its decoder is not the standard one
    (or has parts this module cannot find: see the module docstring)."""
    try:
        from transformers.models.sam2 import modeling_sam2 as m
    except ImportError:     # pragma: no cover - transformers is a requirement
        return None

    def build(model):
        dec = getattr(model, "mask_decoder", None)
        if type(dec) is not m.Sam2MaskDecoder or type(dec.transformer) is not m.Sam2TwoWayTransformer:
            return None
        if not (dec.transformer.layers and dec.transformer.layers[0].skip_first_layer_pe):
            return None
        with torch.inference_mode():
            dense_pe = model.get_image_wide_positional_embeddings()
            tokens = torch.cat([dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight])
        return FastMaskDecoder(
            dec, dense_pe, model.prompt_encoder.no_mask_embed.weight, tokens, iou_index=1,
            upscaling=(dec.upscale_conv1, dec.upscale_layer_norm, dec.activation, dec.upscale_conv2,
                       dec.activation),
            stability_select=bool(dec.dynamic_multimask_via_stability))

    return _guarded("SAM 2.1", build, model)
