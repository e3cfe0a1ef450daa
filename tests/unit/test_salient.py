"""core.salient: BiRefNet (the learned subject finder) through the weights registry, offline.

The `tiny` subject model is the real architecture at widths of 8, random weights, written as
model.safetensors by the registry's download path and loaded back strictly by key name, the way
ZhengPeng7/BiRefNet_lite's model.safetensors is.
"""
from __future__ import annotations

import numpy as np
import pytest

from core import catalogue, salient, weights
from core.errors import MissingWeightsError


@pytest.fixture(scope="module")
def tiny_birefnet(weights_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_WEIGHTS_DIR", str(weights_dir))
        return weights.download("tiny", "subject")


def _photo(h=120, w=181):
    rgb = np.full((h, w, 3), 245, np.uint8)
    rgb[30:90, 60:130] = (180, 40, 30)
    return rgb


def test_tiny_model_loads_through_the_registry_and_gives_a_full_size_mask(tiny_birefnet):
    assert (tiny_birefnet / "model.safetensors").is_file()
    found = salient.find_subject(_photo(), "tiny")
    assert found.mask.shape == (120, 181) and found.mask.dtype == np.uint8
    assert set(np.unique(found.mask)) <= {0, 255} and found.mask.any()
    assert 0.0 <= found.confidence <= 1.0
    x1, y1, x2, y2 = found.box
    assert 0 <= x1 < x2 <= 181 and 0 <= y1 < y2 <= 120
    assert found.method == "tiny"


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_wrong_checkpoint_fails_with_one_line(tmp_path, monkeypatch, tiny_birefnet):
    import shutil
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "birefnet-lite").mkdir()
    # the tiny checkpoint where the lite one goes: same key names, other shapes
    shutil.copy(tiny_birefnet / "model.safetensors", tmp_path / "birefnet-lite" / "model.safetensors")
    with pytest.raises(salient.ModelLoadError) as e:
        salient.load("birefnet-lite")
    assert "not a birefnet-lite checkpoint" in _one_line(e.value)
    # and a file of other keys
    from safetensors.torch import save_file
    import torch
    save_file({"backbone.weight": torch.zeros(2)}, str(tmp_path / "birefnet-lite" / "model.safetensors"))
    with pytest.raises(salient.ModelLoadError) as e:
        salient.load("birefnet-lite")
    assert "unexpected" in _one_line(e.value)


def test_missing_weights_say_how_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError) as e:
        salient.find_subject(_photo(), "birefnet-lite")
    assert "models download birefnet-lite" in _one_line(e.value)


def test_the_tiny_model_is_never_picked_automatically(tiny_birefnet):
    assert weights.is_present(weights.get_spec("tiny", "subject"))
    assert salient.available() is None
    assert catalogue.auto_subject(_photo()).method == "studio"


def test_the_registry_lists_the_published_checkpoints():
    lite, general = weights.get_spec("birefnet-lite", "subject"), weights.get_spec("birefnet", "subject")
    assert (lite.repo_id, lite.filename) == ("ZhengPeng7/BiRefNet_lite", "model.safetensors")
    assert (general.repo_id, general.filename) == ("ZhengPeng7/BiRefNet", "model.safetensors")


def test_the_lite_architecture_has_the_published_key_names_and_shapes():
    """Key names and shapes of BiRefNet_lite as the upstream code (config.py: swin_v1_t,
    mul_scl_ipt 'cat', cxt_num 3, ASPPDeformable, BatchNorm) builds them."""
    import torch
    from core.salient.arch import ARCHS, BiRefNet
    with torch.device("meta"):
        state = BiRefNet(ARCHS["birefnet-lite"]).state_dict()
    expect = {
        "bb.patch_embed.proj.weight": (96, 3, 4, 4),
        "bb.layers.0.blocks.0.attn.relative_position_bias_table": (169, 3),
        "bb.layers.0.blocks.1.attn.relative_position_index": (49, 49),
        "bb.layers.2.blocks.5.mlp.fc2.weight": (384, 1536),
        "bb.layers.2.downsample.reduction.weight": (768, 1536),
        "bb.norm3.weight": (768,),
        "squeeze_module.0.conv_in.weight": (64, 1536 + 1344, 3, 3),
        "squeeze_module.0.dec_att.aspp_deforms.2.atrous_conv.offset_conv.weight": (98, 64, 7, 7),
        "squeeze_module.0.bn_out.running_var": (1536,),
        "decoder.ipt_blk5.conv1.weight": (64, 3072, 3, 3),
        "decoder.ipt_blk1.conv_out.weight": (24, 64, 3, 3),
        "decoder.decoder_block1.conv_out.weight": (96, 64, 3, 3),
        "decoder.lateral_block4.conv.weight": (768, 768, 1, 1),
        "decoder.gdt_convs_4.1.num_batches_tracked": (),
        "decoder.gdt_convs_attn_2.0.weight": (1, 16, 1, 1),
        "decoder.conv_out1.0.weight": (1, 120, 1, 1),
    }
    assert {k: tuple(state[k].shape) for k in expect} == expect
    assert not any(k.startswith(("bb.absolute_pos_embed", "cls_head")) for k in state)


def test_a_broken_download_falls_back_to_the_studio_method(tmp_path, monkeypatch, tiny_birefnet, caplog):
    import shutil
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "birefnet-lite").mkdir()
    shutil.copy(tiny_birefnet / "model.safetensors", tmp_path / "birefnet-lite" / "model.safetensors")
    assert salient.available() == "birefnet-lite"
    found = catalogue.auto_subject(_photo())
    assert found.method == "studio" and found.mask[60, 90] == 255
    assert "not a birefnet-lite checkpoint" in caplog.text
