"""core.arrays (the image and mask checks every module uses) and core.devices (the one device choice)."""
from __future__ import annotations

import numpy as np
import pytest

from core import arrays, devices
from core.errors import InvalidOptionError


def test_rgb_accepts_hxwx3_uint8_as_is():
    a = np.zeros((4, 5, 3), np.uint8)
    assert arrays.rgb(a) is a


@pytest.mark.parametrize("value, message", [
    (np.zeros((4, 5), np.uint8), r"photo must be an RGB uint8 array of shape HxWx3, got uint8 array of shape \(4, 5\)"),
    (np.zeros((4, 5, 3), np.float32), "got float32 array"),
    (np.zeros((4, 5, 4), np.uint8), "HxWx3"),
    ([[1, 2, 3]], "got list"),
    (np.zeros((0, 5, 3), np.uint8), r"photo is empty \(5x0\)"),
])
def test_rgb_rejects_with_one_line(value, message):
    with pytest.raises(InvalidOptionError, match=message) as e:
        arrays.rgb(value, "photo")
    assert "\n" not in str(e.value)


def test_mask_uint8_as_is_bool_as_0_255_or_kept():
    m = np.zeros((3, 4), np.uint8)
    assert arrays.mask(m) is m
    b = np.eye(3, 4, dtype=bool)
    u = arrays.mask(b)
    assert u.dtype == np.uint8 and set(np.unique(u)) == {0, 255} and np.array_equal(u == 255, b)
    assert arrays.mask(b, keep_bool=True) is b
    assert arrays.mask(m, shape=(3, 4, 3)) is m                 # an image's shape: only H, W count


@pytest.mark.parametrize("value, shape, message", [
    ([[0, 255]], None, "region must be a numpy array"),
    (np.zeros((3, 4, 1), np.uint8), None, r"region must be 2-D \(HxW\)"),
    (np.zeros((0, 4), np.uint8), None, "region is empty"),
    (np.zeros((3, 4), np.float32), None, "region must be uint8 .* or bool, got float32"),
    (np.zeros((3, 4), np.uint8), (4, 3), "region is 4x3 but must match the image 3x4"),
])
def test_mask_rejects_with_one_line(value, shape, message):
    with pytest.raises(InvalidOptionError, match=message) as e:
        arrays.mask(value, "region", shape=shape)
    assert "\n" not in str(e.value)


def test_pick_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv(devices.ENV, raising=False)
    for cuda, mps, expected in [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]:
        monkeypatch.setattr(devices, "_cuda", lambda cuda=cuda: cuda)
        monkeypatch.setattr(devices, "_mps", lambda mps=mps: mps)
        assert devices.pick() == expected


def test_requested_and_environment_devices_are_checked(monkeypatch):
    import torch

    monkeypatch.setenv(devices.ENV, "cpu")
    assert devices.pick() == "cpu" and devices.name() == "CPU"
    assert devices.pick("CPU") == "cpu"                         # an explicit request wins over the env
    monkeypatch.setenv(devices.ENV, "tpu")
    with pytest.raises(InvalidOptionError, match=r"unknown device 'tpu' \(BACKDROP_DEVICE\); use cpu"):
        devices.pick()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps", lambda: False)
    for wanted in ("cuda", "cuda:1", "mps"):
        with pytest.raises(InvalidOptionError, match="is not available") as e:
            devices.pick(wanted)
        assert "\n" not in str(e.value)


def test_segmentation_and_inpainting_follow_the_environment(monkeypatch, tiny_sam, tiny_inpaint):
    """Both model families ask core.devices: a bad BACKDROP_DEVICE is one line, not a crash in torch."""
    from core import inpaint, segment, weights

    monkeypatch.setenv(devices.ENV, "gpu")
    with pytest.raises(InvalidOptionError, match="unknown device 'gpu'"):
        inpaint.get_inpainter("tiny")
    with pytest.raises(InvalidOptionError, match="unknown device 'gpu'"):
        segment.load_sam(weights.get_spec("tiny", "segment"), tiny_sam)
    assert segment.default_device is devices.pick


def _probes(monkeypatch, cuda: bool, mps: bool) -> None:
    """Patch torch's own availability probes (what core.devices asks)."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda, mps, device, dtype", [
    (True, True, "cuda", "float16"), (False, True, "mps", "float32"), (False, False, "cpu", "float32"),
])
def test_device_and_dtype_follow_the_probes(monkeypatch, cuda, mps, device, dtype):
    import torch
    monkeypatch.delenv(devices.ENV, raising=False)
    monkeypatch.delenv(devices.DTYPE_ENV, raising=False)
    _probes(monkeypatch, cuda, mps)
    assert devices.pick() == device
    assert devices.dtype() == getattr(torch, dtype) == devices.dtype(device)


def test_override_device_and_dtype(monkeypatch):
    import torch
    _probes(monkeypatch, True, True)
    monkeypatch.setenv(devices.ENV, "cpu")
    assert devices.pick() == "cpu" and devices.dtype() == torch.float32
    monkeypatch.setenv(devices.ENV, "mps")
    assert devices.pick() == "mps"
    monkeypatch.setenv(devices.DTYPE_ENV, "fp16")
    assert devices.dtype() == torch.float16 and devices.dtype("cuda") == torch.float16
    monkeypatch.setenv(devices.DTYPE_ENV, "bfloat16")
    assert devices.dtype("cpu") == torch.bfloat16
    for bad, words in (("float16", "not supported on the CPU"), ("int8", "unknown dtype 'int8'")):
        monkeypatch.setenv(devices.DTYPE_ENV, bad)
        with pytest.raises(InvalidOptionError, match=words) as e:
            devices.dtype("cpu")
        assert "\n" not in str(e.value)
