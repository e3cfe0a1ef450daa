"""A tiny SAM 2.1 built in code for tests (random weights, seeded), saved like the hub snapshot."""
from __future__ import annotations


def build_tiny_sam2(folder):
    """A SAM 2.1 with a 4-stage Hiera of width 8..64 and 32-d prompt encoder / decoder, random
    weights (seeded, global RNG restored), saved like the hub snapshot: config + weights + processor."""
    import torch
    from transformers import (Sam2Config, Sam2HieraDetConfig, Sam2ImageProcessor, Sam2MaskDecoderConfig,
                              Sam2Model, Sam2Processor, Sam2PromptEncoderConfig, Sam2VisionConfig)

    backbone = Sam2HieraDetConfig(hidden_size=8, embed_dim_per_stage=[8, 16, 32, 64],
                                  num_attention_heads_per_stage=[1, 1, 1, 1], blocks_per_stage=[1, 1, 2, 1],
                                  global_attention_blocks=[3], window_size_per_stage=[8, 4, 4, 4],
                                  window_positional_embedding_background_size=[4, 4])
    config = Sam2Config(
        vision_config=Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                                       fpn_hidden_size=32),
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32),
        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2,
                                                  iou_head_hidden_dim=32),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Sam2Model(config)
    model.save_pretrained(folder)
    Sam2Processor(Sam2ImageProcessor()).save_pretrained(folder)
    return folder
