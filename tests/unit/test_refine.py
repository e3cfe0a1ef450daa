"""Clicks refine an automatic mask (core.refine): with SAM the auto mask is its prompt (box and
mask input) together with the clicks; with GrabCut an add click adds a region, a remove click takes
one away, and the rest of the auto mask stays."""
from __future__ import annotations

import numpy as np
import pytest

from core.refine import mask_box, refine
from core.segment import Click, SegmentRequest, get_segmenter
from core.segment.grabcut import GrabCutSegmenter


def _studio():
    """White backdrop, a red product (the auto mask's subject) and a separate blue object."""
    rgb = np.full((120, 160, 3), 250, np.uint8)
    rgb[30:90, 20:70] = (180, 20, 20)
    rgb[40:80, 110:145] = (20, 40, 200)
    red = np.zeros((120, 160), np.uint8)
    red[30:90, 20:70] = 255
    blue = np.zeros_like(red)
    blue[40:80, 110:145] = 255
    return rgb, red, blue


def _iou(a, b) -> float:
    a, b = a.astype(bool), b >= 128
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_no_clicks_give_the_auto_mask_at_the_size_asked():
    rgb, red, _ = _studio()
    out = refine(GrabCutSegmenter(), rgb, red, (), out_size=(80, 60))
    assert out.masks.shape == (1, 60, 80)
    assert np.array_equal(out.masks[0], red[::2, ::2] >= 128)
    assert mask_box(red) == (20, 30, 70, 90) and mask_box(np.zeros_like(red)) is None


def test_grabcut_add_click_adds_the_object_and_keeps_the_auto_mask():
    rgb, red, blue = _studio()
    out = refine(GrabCutSegmenter(), rgb, red, (Click(127, 60, 1),)).masks[0]
    assert _iou(out & (red >= 128), red) == 1.0               # the auto mask stays
    assert _iou(out & (blue >= 128), blue) > 0.9              # the clicked object joins it
    assert not out[:, :15].any() and not out[100:].any()      # the backdrop does not


def test_grabcut_remove_click_takes_away_only_the_clicked_part():
    rgb, red, blue = _studio()
    both = np.maximum(red, blue)          # the auto mask took the blue object too
    out = refine(GrabCutSegmenter(), rgb, both, (Click(127, 60, 0),)).masks[0]
    assert _iou(out, red) > 0.98


def test_a_remove_click_outside_the_mask_changes_nothing():
    rgb, red, _ = _studio()
    out = refine(GrabCutSegmenter(), rgb, red, (Click(5, 5, 0),)).masks[0]
    assert np.array_equal(out, red >= 128)


@pytest.fixture
def tiny(tiny_sam):
    return get_segmenter("tiny")


def test_sam_takes_the_auto_mask_as_its_prompt(tiny):
    """The same click with two different auto masks gives two different masks: SAM is prompted
    with each mask (box and mask input), not with the click alone."""
    rgb, red, blue = _studio()
    click = (Click(45, 60, 1),)
    a = refine(tiny, rgb, red, click, out_size=(80, 60))
    b = refine(tiny, rgb, np.maximum(red, blue), click, out_size=(80, 60))
    alone = tiny.segment(rgb, SegmentRequest(clicks=click, multimask=False), out_size=(80, 60))
    assert a.masks.shape == (1, 60, 80) and a.scores.shape == (1,)
    assert not np.array_equal(a.masks[0], b.masks[0])
    assert not np.array_equal(a.masks[0], alone.masks[0])
