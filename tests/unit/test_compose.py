"""compose: paste-back keeps the subject bit-identical; non-generative backgrounds by pixel values."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from core.compose import BackgroundSpec, alpha_matte, blurred, compose, cover_fit, feather_matte
from core.errors import ImageError, InvalidOptionError
from core.spec import parse_color


def ellipse_mask(h, w, frac=0.3) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (w // 2, h // 2), (int(w * frac), int(h * frac * 1.2)), 0, 0, 360, 255, -1)
    return m


def eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    """An independent erosion (OpenCV ellipse kernel), one pixel larger than the feather radius."""
    if radius == 0:
        return mask >= 128
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 3, 2 * radius + 3))
    return cv2.erode(mask, k) >= 128


def far_outside(mask: np.ndarray, px: int = 3) -> np.ndarray:
    return cv2.dilate(mask, np.ones((2 * px + 1, 2 * px + 1), np.uint8)) < 128


# -- BackgroundSpec -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical", [
    ("sd", "sd"), ("SD", "sd"), ("transparent", "transparent"),
    ("color:#1E90FF", "color:#1e90ff"), ("color:#fff", "color:#ffffff"), ("color:00ff00", "color:#00ff00"),
    ("color:white", "color:#ffffff"), ("blur:12", "blur:12"), ("blur:2.5", "blur:2.5"), ("blur", "blur:20"),
    ("image:/tmp/a:b.png", "image:/tmp/a:b.png"),
])
def test_parse_round_trips(text, canonical):
    spec = BackgroundSpec.parse(text)
    assert str(spec) == canonical
    assert BackgroundSpec.parse(str(spec)) == spec


def test_parse_values():
    assert BackgroundSpec.parse("color:#123").color == (0x11, 0x22, 0x33)
    assert BackgroundSpec.parse("blur:7").radius == 7.0
    assert BackgroundSpec.parse("image:bg.jpg").path == "bg.jpg"
    assert BackgroundSpec.parse("sd").generative and not BackgroundSpec.parse("blur").generative


@pytest.mark.parametrize("bad", ["", "  ", "nope", "color:", "color:#12", "color:#GGGGGG", "color:#1234567",
                                 "color:notacolour", "blur:abc", "blur:0", "blur:-3", "blur:1e9", "blur:nan",
                                 "image:", "sd:cats", "transparent:1", "colour"])
def test_parse_rejects_bad_values_in_one_line(bad):
    with pytest.raises(InvalidOptionError) as e:
        BackgroundSpec.parse(bad)
    assert "\n" not in str(e.value) and str(e.value)


def test_parse_color_forms():
    assert parse_color("#abc") == (0xaa, 0xbb, 0xcc)
    assert parse_color("  #A0B1C2 ") == (0xa0, 0xb1, 0xc2)
    with pytest.raises(InvalidOptionError):
        parse_color("#12345")


# -- paste-back -----------------------------------------------------------------------------------

@pytest.mark.parametrize("feather", [0, 1, 3, 8])
def test_subject_bit_identical_inside_eroded_mask(astronaut, feather):
    mask = ellipse_mask(*astronaut.shape[:2])
    out = compose(astronaut, mask, BackgroundSpec.parse("color:#00ff00"), feather=feather)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    inside = eroded(mask, feather)
    assert inside.sum() > 10_000
    assert np.array_equal(out[inside], astronaut[inside])
    # and exactly the background colour outside the mask
    outside = mask < 128
    assert (out[outside] == (0, 255, 0)).all()


def test_feather_band_blends_between_subject_and_background():
    h, w = 120, 160
    original = np.full((h, w, 3), 200, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[:, 80:] = 255                                       # subject = right half, straight edge
    out = compose(original, mask, BackgroundSpec("color", color=(0, 0, 0)), feather=6)
    row = out[60, :, 0].astype(int)
    assert (row[:80] == 0).all()                              # background
    assert (row[86:] == 200).all()                            # core (distance > 6)
    band = row[80:86]
    assert (np.diff(band) >= 0).all() and 0 < band[0] < band[-1] < 200   # a monotone ramp


def test_feather_matte_consistency(chelsea):
    mask = ellipse_mask(*chelsea.shape[:2])
    m = feather_matte(mask, 5)
    core = m.core
    band = np.zeros(mask.size, bool)
    band[m.band_idx] = True
    band = band.reshape(mask.shape)
    assert not (core & band).any() and np.array_equal(core | band, mask >= 128)
    assert np.array_equal(m.subject, mask >= 128)
    assert m.band_alpha.shape == m.band_idx.shape and (m.band_alpha > 0).all() and (m.band_alpha < 1).all()
    assert len(np.unique(m.band_idx)) == len(m.band_idx)
    alpha = alpha_matte(mask, 5)
    assert (alpha[core] == 255).all() and (alpha[mask < 128] == 0).all()
    assert np.array_equal(alpha_matte(mask, 0), mask)


def _reference_alpha(mask: np.ndarray, feather: int) -> np.ndarray:
    """Straightforward full-image version of the matte, to check the tiled one against."""
    hard = (mask >= 128).astype(np.uint8)
    d = cv2.distanceTransform(hard, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    t = d / np.float32(feather + 1)
    a = np.where(d > feather, 255, np.round((t * t * (3 - 2 * t)).astype(np.float32) * 255))
    return np.where(hard > 0, a, 0).astype(np.uint8)


@pytest.mark.parametrize("feather", [1, 5, 16, 17, 40])
def test_tiled_matte_equals_full_distance_transform(feather):
    rng = np.random.default_rng(feather)
    h, w = 333, 517                                         # not multiples of any tile size
    blobs = (cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 12) > 0.5)
    aligned = np.zeros((h, w), bool)
    aligned[64:192, 32:256] = True                          # edges exactly on tile borders
    border = np.zeros((h, w), bool)
    border[:, 400:] = True                                  # touches the image edge
    border[:20, :] = True
    speck = np.zeros((h, w), bool)
    speck[100, 100] = True
    hole = np.ones((h, w), bool)
    hole[150:153, 300:302] = False                          # nearly all subject, one small hole
    for m in (blobs, aligned, border, speck, hole):
        mask = m.astype(np.uint8) * 255
        assert np.array_equal(alpha_matte(mask, feather), _reference_alpha(mask, feather))


def test_mask_as_bool_and_soft_values(coffee):
    mask = ellipse_mask(*coffee.shape[:2])
    soft = (mask // 255 * 200).astype(np.uint8)             # 200 >= 128 counts as subject
    a = compose(coffee, mask, "color:#000", feather=2)
    assert np.array_equal(a, compose(coffee, mask >= 128, "color:#000", feather=2))
    assert np.array_equal(a, compose(coffee, soft, "color:#000", feather=2))


@pytest.mark.parametrize("feather", [-1, 1.5, 10_000, True])
def test_bad_feather(astronaut, feather):
    with pytest.raises(InvalidOptionError):
        compose(astronaut, ellipse_mask(512, 512), "color:#000", feather=feather)


def test_mask_size_mismatch(astronaut):
    with pytest.raises(InvalidOptionError):
        compose(astronaut, np.zeros((10, 10), np.uint8), "color:#000")


def test_empty_and_full_masks(chelsea):
    empty = np.zeros(chelsea.shape[:2], np.uint8)
    assert (compose(chelsea, empty, "color:#102030", feather=4) == (16, 32, 48)).all()
    full = np.full(chelsea.shape[:2], 255, np.uint8)
    assert np.array_equal(compose(chelsea, full, "color:#102030", feather=4), chelsea)


# -- backgrounds ----------------------------------------------------------------------------------

def test_blur_background_changes_background_not_subject(astronaut):
    mask = ellipse_mask(512, 512)
    out = compose(astronaut, mask, "blur:8", feather=2)
    inside = eroded(mask, 2)
    assert np.array_equal(out[inside], astronaut[inside])
    bg = far_outside(mask)
    diff = np.abs(out[bg].astype(int) - astronaut[bg].astype(int)).mean()
    assert diff > 3                                          # really blurred
    # smoother than the original: less high-frequency energy in the background
    lap = lambda x: np.abs(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_32F))[bg].mean()
    assert lap(out) < 0.5 * lap(astronaut)


def test_blur_does_not_halo_the_subject():
    h, w = 200, 200
    original = np.full((h, w, 3), 20, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[50:150, 50:150] = 255
    original[mask > 0] = 250                                 # bright subject on a dark background
    bg = blurred(original, mask, 15)
    ring = far_outside(mask, 2) & ~far_outside(mask, 10)    # 3..10 px outside the subject
    assert bg[ring].max() <= 25                              # no bright halo leaking out
    plain = blurred(original, None, 15)
    assert plain[ring].max() > 100                           # (a plain blur would halo)


def test_image_background_cover_fit(tmp_path):
    # 100x50 source with four vertical 25 px stripes; covering 200x200 scales x4 and crops the centre
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    src = np.zeros((50, 100, 3), np.uint8)
    for i, c in enumerate(colors):
        src[:, i * 25:(i + 1) * 25] = c
    fitted = cover_fit(src, (200, 200))
    assert fitted.shape == (200, 200, 3)
    assert (np.abs(fitted[:, 5:90].astype(int) - colors[1]).max(axis=-1) <= 2).all()
    assert (np.abs(fitted[:, 110:195].astype(int) - colors[2]).max(axis=-1) <= 2).all()
    # portrait target: height-limited the other way (scale 300/50 = 6 -> 600x300, crop x 250..350)
    tall = cover_fit(src, (100, 300))
    assert tall.shape == (300, 100, 3)
    assert (np.abs(tall[:, :45].astype(int) - colors[1]).max(axis=-1) <= 2).all()
    assert (np.abs(tall[:, 55:].astype(int) - colors[2]).max(axis=-1) <= 2).all()

    path = tmp_path / "bg.png"
    Image.fromarray(src).save(path)
    original = np.full((200, 200, 3), 128, np.uint8)
    mask = np.zeros((200, 200), np.uint8)
    mask[80:120, 80:120] = 255
    out = compose(original, mask, BackgroundSpec.parse(f"image:{path}"))
    assert np.array_equal(out[mask > 0], original[mask > 0])
    assert np.array_equal(out[mask == 0], fitted[mask == 0])


def test_image_background_missing_or_corrupt(tmp_path, astronaut):
    mask = ellipse_mask(512, 512)
    with pytest.raises(ImageError, match="not found"):
        compose(astronaut, mask, f"image:{tmp_path / 'nope.png'}")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageError):
        compose(astronaut, mask, f"image:{bad}")


def test_transparent_alpha_is_the_mask(chelsea):
    mask = ellipse_mask(*chelsea.shape[:2])
    out = compose(chelsea, mask, "transparent")
    assert out.shape == chelsea.shape[:2] + (4,) and out.dtype == np.uint8
    assert np.array_equal(out[..., 3], mask)
    assert np.array_equal(out[..., :3][mask > 0], chelsea[mask > 0])
    assert (out[..., :3][mask == 0] == 0).all()
    soft = compose(chelsea, mask, "transparent", feather=4)
    assert np.array_equal(soft[..., 3], alpha_matte(mask, 4))
    inside = eroded(mask, 4)
    assert (soft[..., 3][inside] == 255).all() and np.array_equal(soft[..., :3][inside], chelsea[inside])
    edge = (mask > 0) & ~inside
    assert ((soft[..., 3][edge] > 0) & (soft[..., 3][edge] <= 255)).all()


def test_sd_background_needs_a_full_size_generated_image(astronaut):
    mask = ellipse_mask(512, 512)
    with pytest.raises(InvalidOptionError):
        compose(astronaut, mask, "sd")
    with pytest.raises(InvalidOptionError):
        compose(astronaut, mask, "sd", generated=np.zeros((256, 256, 3), np.uint8))
    generated = np.random.default_rng(0).integers(0, 256, astronaut.shape, dtype=np.uint8)
    out = compose(astronaut, mask, "sd", feather=3, generated=generated)
    assert np.array_equal(out[mask == 0], generated[mask == 0])
    assert np.array_equal(out[eroded(mask, 3)], astronaut[eroded(mask, 3)])
    assert out is not generated and not np.shares_memory(out, generated)


def test_inputs_are_not_modified(astronaut):
    before = astronaut.copy()
    mask = ellipse_mask(512, 512)
    m_before = mask.copy()
    compose(astronaut, mask, "blur:5", feather=3)
    compose(astronaut, mask, "transparent", feather=3)
    assert np.array_equal(astronaut, before) and np.array_equal(mask, m_before)


# ----------------------------------------------------------------------------------------- image: backgrounds
# A background photo goes through core.images.load_image like the subject photo (it was opened with raw
# Pillow, skipping the format allow-list, the pixel cap and the 16-bit/palette/profile conversions).

def background_layer(path, size=(40, 30)) -> np.ndarray:
    """The image: background layer of a compose whose mask has no subject at all."""
    w, h = size
    return compose(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8), f"image:{path}")


def background_error(path) -> str:
    with pytest.raises(ImageError) as info:
        background_layer(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"could not read background image {path.name}: "), msg
    return msg


def test_image_background_outside_the_allow_list_or_over_the_pixel_cap_is_refused(tmp_path):
    from core.images import encode_png, png_chunk
    ppm = tmp_path / "bg.ppm"                      # Pillow reads it; Backdrop's allow-list does not
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(ppm)
    assert "not an image in a supported format" in background_error(ppm)
    png = encode_png(np.zeros((1, 1), np.uint8))   # a 1x1 PNG whose header claims 8000x8000 (64 MP)
    huge = tmp_path / "huge.png"
    huge.write_bytes(png[:8] + png_chunk(b"IHDR", struct.pack(">II", 8000, 8000) + png[24:29]) + png[33:])
    msg = background_error(huge)
    assert "too large" in msg and "8000x8000" in msg


def test_image_background_16_bit_and_palette_become_rgb_uint8(tmp_path):
    grey16 = tmp_path / "grey16.png"               # 16-bit greyscale: 257 * v is v in 8 bits
    levels = (np.arange(30 * 40).reshape(30, 40) % 256).astype(np.uint16)
    Image.fromarray(levels * 257).save(grey16)
    assert Image.open(grey16).mode.startswith("I;16")
    out = background_layer(grey16)
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    assert np.array_equal(out, np.repeat(levels.astype(np.uint8)[:, :, None], 3, axis=2))

    cmyk = tmp_path / "cmyk.tif"                   # pure cyan ink
    Image.new("CMYK", (40, 30), (255, 0, 0, 0)).save(cmyk)
    assert (background_layer(cmyk) == (0, 255, 255)).all()

    pal = tmp_path / "pal.png"                     # palette with a transparent entry: flattened on white
    im = Image.new("P", (40, 30), 1)
    im.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    im.paste(0, (0, 0, 20, 30))
    im.save(pal, transparency=0)
    out = background_layer(pal)
    assert (out[:, :20] == 255).all() and (out[:, 20:] == (200, 10, 20)).all()


def test_image_background_with_alpha_is_flattened_on_white_as_before(tmp_path):
    v, a = np.meshgrid(np.arange(0, 256, 5), np.arange(0, 256, 5))
    rgba = np.stack([v, 255 - v, v // 2, a], -1).astype(np.uint8)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    im = Image.fromarray(rgba, "RGBA")             # the old result: Pillow's paste on white
    flat = Image.new("RGB", im.size, (255, 255, 255))
    flat.paste(im, mask=im.getchannel("A"))
    h, w = rgba.shape[:2]
    assert np.array_equal(background_layer(path, (w, h)), np.asarray(flat))
