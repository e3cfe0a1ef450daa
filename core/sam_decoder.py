"""SAM's mask decoder with its image-only half done once per image (the click path of core.segment).

`segment_anything`'s `MaskDecoder` redoes, on every click, work that depends only on the image:
adding the constant no-mask embedding to 4096 image tokens, building and adding the dense
positional encoding, copying both per prompt batch, and the first transformer layer's key, value
and query projections of the image tokens. `prepare` does that once when the embedding is cached;
`decode` runs the rest, which is the same computation as `MaskDecoder.forward` on the same weights
(results agree to float rounding; tests/test_segment.py compares them). It also runs the decoder's
upscaling in channels-last layout with a native layer norm, 2-3x faster on CPU than the
channels-first `LayerNorm2d`.

Only prompts without a mask input are handled (Backdrop never passes one); `supports` says whether
a model has the standard decoder this mirrors, and core.segment falls back to the model's own
decoder otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True, eq=False)
class ImageState:
    """What one image contributes to every click: (1, HW, C) tokens and layer-0 projections."""
    keys: torch.Tensor       # image tokens + no-mask embedding, (1, HW, C)
    t2i_k: torch.Tensor      # layer 0, tokens -> image: keys (1, heads, HW, c)
    t2i_v: torch.Tensor      #                          values (1, heads, HW, c)
    i2t_q: torch.Tensor      # layer 0, image -> tokens: queries (1, heads, HW, c)
    hw: tuple[int, int]      # embedding grid (h, w)


def supports(model: Any) -> bool:
    """True if `model` (a segment_anything Sam) has the decoder `decode` mirrors."""
    try:
        from segment_anything.modeling.common import LayerNorm2d
        from segment_anything.modeling.mask_decoder import MaskDecoder
        from segment_anything.modeling.transformer import TwoWayTransformer
    except ImportError:     # pragma: no cover - segment_anything is a requirement
        return False
    dec = getattr(model, "mask_decoder", None)
    if type(dec) is not MaskDecoder or type(dec.transformer) is not TwoWayTransformer:
        return False
    up = dec.output_upscaling
    return (len(dec.transformer.layers) > 0 and dec.transformer.layers[0].skip_first_layer_pe
            and len(up) == 5 and isinstance(up[1], LayerNorm2d))


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _attend(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """segment_anything's `Attention.forward` after the projections (q, k, v already split in heads)."""
    out = F.scaled_dot_product_attention(q, k, v)       # softmax(q k^T / sqrt(c)) v
    b, n, t, c = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, n * c))


class FastMaskDecoder:
    """`decode(prepare(features), sparse, multimask)` == `model.mask_decoder(...)` with masks=None."""

    def __init__(self, model):
        self.dec = model.mask_decoder
        self.tr = self.dec.transformer
        with torch.inference_mode():
            pe = model.prompt_encoder.get_dense_pe()                    # (1, C, h, w), constant
            self.pe = pe.flatten(2).transpose(1, 2).contiguous()       # (1, HW, C)
            self.no_mask = model.prompt_encoder.no_mask_embed.weight.reshape(1, 1, -1).clone()
            self.output_tokens = torch.cat([self.dec.iou_token.weight, self.dec.mask_tokens.weight])[None]
        self.dec.output_upscaling.to(memory_format=torch.channels_last)

    def prepare(self, features: torch.Tensor) -> ImageState:
        """The image-only work for (1, C, h, w) encoder features: 10 MB per image for SAM (float32)."""
        layer = self.tr.layers[0]
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        with torch.inference_mode():
            keys = (features.flatten(2).transpose(1, 2) + self.no_mask).contiguous()
            kpe = keys + self.pe
            return ImageState(
                keys=keys,
                t2i_k=_heads(t2i.k_proj(kpe), t2i.num_heads).contiguous(),
                t2i_v=_heads(t2i.v_proj(keys), t2i.num_heads).contiguous(),
                i2t_q=_heads(i2t.q_proj(kpe), i2t.num_heads).contiguous(),
                hw=tuple(features.shape[-2:]),
            )

    def decode(self, state: ImageState, sparse: torch.Tensor, multimask: bool):
        """(low-res logits (1, N, 4h, 4w), iou predictions (1, N)) for one prompt's sparse embedding."""
        with torch.inference_mode():
            masks, iou = self._predict(state, sparse)
        sl = slice(1, None) if multimask else slice(0, 1)
        return masks[:, sl], iou[:, sl]

    def _predict(self, state: ImageState, sparse: torch.Tensor):
        dec, tr, pe = self.dec, self.tr, self.pe
        tokens = torch.cat((self.output_tokens.to(sparse.dtype), sparse), dim=1)     # (1, T, C)
        queries, keys = tokens, state.keys
        for i, layer in enumerate(tr.layers):
            # (1) self-attention of the prompt tokens
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            # (2) tokens attend to the image; layer 0's image side was done in `prepare`
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            if i == 0:
                k, v, q_img = state.t2i_k, state.t2i_v, state.i2t_q
            else:
                kpe = keys + pe
                k = _heads(t2i.k_proj(kpe), t2i.num_heads)
                v = _heads(t2i.v_proj(keys), t2i.num_heads)
                q_img = _heads(i2t.q_proj(kpe), i2t.num_heads)
            q = _heads(t2i.q_proj(queries + tokens), t2i.num_heads)
            queries = layer.norm2(queries + _attend(t2i, q, k, v))
            # (3) MLP on the tokens
            queries = layer.norm3(queries + layer.mlp(queries))
            # (4) the image attends to the tokens
            k_tok = _heads(i2t.k_proj(queries + tokens), i2t.num_heads)
            v_tok = _heads(i2t.v_proj(queries), i2t.num_heads)
            keys = layer.norm4(keys + _attend(i2t, q_img, k_tok, v_tok))
        final = tr.final_attn_token_to_image
        n = final.num_heads
        attn = _attend(final, _heads(final.q_proj(queries + tokens), n),
                       _heads(final.k_proj(keys + pe), n), _heads(final.v_proj(keys), n))
        queries = tr.norm_final_attn(queries + attn)

        iou_token_out = queries[:, 0, :]
        mask_tokens_out = queries[:, 1:1 + dec.num_mask_tokens, :]
        h, w = state.hw
        b, _, c = keys.shape
        up = self._upscale(keys.transpose(1, 2).view(b, c, h, w))    # a channels-last view: no copy
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :])
                                for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
        b, c, uh, uw = up.shape
        masks = (hyper_in @ up.reshape(b, c, uh * uw)).view(b, -1, uh, uw)
        return masks, dec.iou_prediction_head(iou_token_out)

    def _upscale(self, x: torch.Tensor) -> torch.Tensor:
        """`output_upscaling` (ConvT, LayerNorm2d, act, ConvT, act) with the norm over NHWC channels."""
        conv1, norm, act1, conv2, act2 = self.dec.output_upscaling
        x = conv1(x).permute(0, 2, 3, 1)                                        # NHWC
        x = F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps).permute(0, 3, 1, 2)
        return act2(conv2(act1(x)))
