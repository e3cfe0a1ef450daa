"""core.images: loading every supported format from real photos, orientation, mode normalisation,
refusal of broken / non-image / oversized files, preview coordinate mapping and encoding."""
from __future__ import annotations

import io
import os
import struct
import sys
import warnings
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.errors import ImageError, InvalidOptionError
from core.images import load as images_load
from core.images import (MAX_PIXELS, LoadedImage, content_hash, encode_jpeg, encode_png,
                         load_image, make_preview, save_image)


def encode(img: np.ndarray | Image.Image, fmt: str, **kw) -> bytes:
    im = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


def error_of(source, **kw) -> str:
    with pytest.raises(ImageError) as info:
        load_image(source, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("could not read "), msg
    return msg


def heif_encoder_available() -> bool:
    try:
        import pillow_heif
        pillow_heif.register_heif_opener()
        encode(np.zeros((16, 16, 3), np.uint8), "HEIF")
        return True
    except Exception:
        return False


# ----------------------------------------------------------------------------------------- formats

@pytest.mark.parametrize("fmt, kw, expect_format", [
    ("PNG", {}, "PNG"),
    ("BMP", {}, "BMP"),
    ("TIFF", {}, "TIFF"),
    ("TIFF", {"compression": "tiff_deflate"}, "TIFF"),
    ("WEBP", {"lossless": True}, "WEBP"),
])
def test_lossless_formats_load_exactly(chelsea, fmt, kw, expect_format):
    img = load_image(encode(chelsea, fmt, **kw))
    assert img.format == expect_format
    assert img.rgb.dtype == np.uint8 and img.rgb.shape == chelsea.shape
    assert np.array_equal(img.rgb, chelsea)
    assert img.alpha is None
    assert img.size == (chelsea.shape[1], chelsea.shape[0]) == (img.width, img.height)
    assert img.hash == content_hash(chelsea)


@pytest.mark.parametrize("fmt, kw, tolerance", [("JPEG", {"quality": 95}, 3.0), ("WEBP", {"quality": 90}, 4.0)])
def test_lossy_formats_load_close_in_rgb_order(coffee, fmt, kw, tolerance):
    img = load_image(encode(coffee, fmt, **kw))
    assert img.format == fmt and img.alpha is None
    assert mean_diff(img.rgb, coffee) < tolerance
    assert mean_diff(img.rgb, coffee[:, :, ::-1]) > 4 * tolerance   # not BGR


def test_multi_picture_jpeg_from_a_camera_is_a_jpeg(chelsea):
    data = encode(chelsea, "MPO", save_all=True, append_images=[Image.fromarray(255 - chelsea)], quality=95)
    with Image.open(io.BytesIO(data)) as check:
        assert check.format == "MPO" and check.n_frames == 2
    img = load_image(data)
    assert img.format == "JPEG"
    assert mean_diff(img.rgb, chelsea) < 3


def test_animated_gif_gives_first_frame(astronaut):
    first = Image.fromarray(astronaut[::2, ::2]).quantize(256)
    second = Image.fromarray(255 - astronaut[::2, ::2]).quantize(256)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as check:
        assert check.n_frames == 2
    img = load_image(data)
    assert img.format == "GIF"
    expected = np.asarray(first.convert("RGB"))
    assert np.array_equal(img.rgb, expected)
    assert mean_diff(img.rgb, np.asarray(second.convert("RGB"))) > 50


def test_heic_loads_through_pillow_heif(coffee, monkeypatch):
    if not heif_encoder_available():
        pytest.skip("this pillow-heif build cannot encode HEIC")
    crop = np.ascontiguousarray(coffee[100:196, 200:328])
    data = encode(crop, "HEIF", quality=95)
    # As in a fresh process: Pillow knows no HEIF until load_image registers pillow-heif on first need.
    monkeypatch.delitem(Image.OPEN, "HEIF")
    monkeypatch.setattr(Image, "ID", [i for i in Image.ID if i != "HEIF"])
    monkeypatch.setattr(images_load, "_heif_ready", None)
    img = load_image(data)
    assert img.format == "HEIF" and img.size == (128, 96)
    assert mean_diff(img.rgb, crop) < 6
    assert "truncated" in error_of(data[: len(data) // 2])


def test_heic_without_pillow_heif_gives_a_clear_error(monkeypatch):
    header = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    monkeypatch.setattr(images_load, "_heif_ready", None)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)   # import fails
    msg = error_of(header, name="IMG_0001.HEIC")
    assert "IMG_0001.HEIC" in msg and "pillow-heif" in msg


def test_cmyk_jpeg_becomes_rgb(astronaut):
    cmyk = Image.fromarray(astronaut).convert("CMYK")
    img = load_image(encode(cmyk, "JPEG", quality=95))
    assert img.rgb.shape == astronaut.shape
    assert mean_diff(img.rgb, astronaut) < 4
    assert mean_diff(img.rgb, 255 - astronaut) > 50    # an un-inverted CMYK decode would land here


# ----------------------------------------------------------------------------------- colour profiles
def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def icc_rgb_profile(desc: str, red, green, blue, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB display profile (colorant matrix + gamma curve), the kind phones and
    cameras embed. No profile files ship on this machine, so tests build their own."""
    ascii_ = desc.encode("ascii") + b"\0"
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_ + bytes(8 + 3 + 67)),
            (b"cprt", b"text\0\0\0\0none\0"), (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", _xyz(*red)), (b"gXYZ", _xyz(*green)), (b"bXYZ", _xyz(*blue)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    start = 128 + 4 + 12 * len(tags)
    table, data = [], b""
    for sig, payload in tags:
        data += bytes(-len(data) % 4)
        table.append(sig + struct.pack(">II", start + len(data), len(payload)))
        data += payload
    size = start + len(data)
    header = (struct.pack(">I4sI", size, b"\0" * 4, 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + bytes(28)
              + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data


# Display P3 (what iPhones embed): the colorants of Apple's profile, adapted to D50.
DISPLAY_P3 = icc_rgb_profile("Display P3 (test)", (0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419),
                             (0.1571, 0.0666, 0.7841))


def _srgb_icc() -> bytes:
    from PIL import ImageCms
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _saturation(rgb: np.ndarray) -> float:
    return float((rgb.max(axis=2).astype(np.int32) - rgb.min(axis=2)).mean())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_display_p3_photo_is_converted_to_srgb(coffee, fmt):
    """A phone photo in Display P3 shows the colours its owner saw: the same numbers mean more
    saturated colours in P3 than in sRGB, so converted to sRGB they spread apart."""
    from PIL import ImageCms

    patch = np.zeros((8, 8, 3), np.uint8)
    patch[:] = (200, 100, 50)                                   # a warm orange
    img = load_image(encode(patch, fmt, icc_profile=DISPLAY_P3, **({"quality": 100} if fmt == "JPEG" else {})))
    r, g, b = (int(v) for v in img.rgb[4, 4])
    assert r >= 210 and g <= 97 and b <= 32, (r, g, b)         # more saturated: about (216, 93, 24)

    photo = load_image(encode(coffee, "PNG", icc_profile=DISPLAY_P3))
    reference = ImageCms.profileToProfile(Image.fromarray(coffee), ImageCms.ImageCmsProfile(io.BytesIO(DISPLAY_P3)),
                                          ImageCms.createProfile("sRGB"), outputMode="RGB")
    assert np.array_equal(photo.rgb, np.asarray(reference))
    assert _saturation(photo.rgb) > _saturation(coffee) + 3


def test_srgb_tagged_and_untagged_photos_load_bit_exact(coffee):
    assert np.array_equal(load_image(encode(coffee, "PNG", icc_profile=_srgb_icc())).rgb, coffee)
    assert np.array_equal(load_image(encode(coffee, "PNG")).rgb, coffee)


def test_p3_photo_with_alpha_keeps_its_alpha(coffee):
    alpha = np.tile(np.linspace(0, 255, coffee.shape[1]).astype(np.uint8), (coffee.shape[0], 1))
    rgba = np.dstack([coffee, alpha])
    img = load_image(encode(rgba, "PNG", icc_profile=DISPLAY_P3))
    assert np.array_equal(img.alpha, alpha)
    assert _saturation(img.rgb) > _saturation(coffee) + 3


def test_p3_palette_png_is_converted_too(coffee):
    pal = Image.fromarray(coffee).quantize(64)
    img = load_image(encode(pal, "PNG", icc_profile=DISPLAY_P3))
    assert _saturation(img.rgb) > _saturation(np.asarray(pal.convert("RGB"))) + 3


@pytest.mark.parametrize("mode, profile", [("RGB", b"not a profile" * 20), ("L", DISPLAY_P3)])
def test_unreadable_or_mismatched_profile_is_ignored(chelsea, mode, profile):
    """A broken profile, or an RGB profile on a greyscale photo, must not make the photo unreadable:
    the pixels are used as stored."""
    im = Image.fromarray(chelsea).convert(mode)
    img = load_image(encode(im, "PNG", icc_profile=profile))
    expected = np.asarray(im.convert("RGB"))
    assert np.array_equal(img.rgb, expected)


def test_16bit_greyscale_png_is_scaled_not_clipped(chelsea):
    grey8 = np.asarray(Image.fromarray(chelsea).convert("L"))
    grey16 = grey8.astype(np.uint16) * 257
    grey16[0, :4] = [0, 65535, 128 * 257, 128 * 257 + 100]
    data = encode(Image.fromarray(grey16), "PNG")
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I")
    img = load_image(data)
    expected = grey8.copy()
    expected[0, :4] = [0, 255, 128, 128]
    for c in range(3):
        assert np.array_equal(img.rgb[:, :, c], expected)


def test_16bit_rgb_png(coffee):
    import cv2
    ok, buf = cv2.imencode(".png", (coffee.astype(np.uint16) * 257)[:, :, ::-1])
    assert ok and buf.tobytes()[24] == 16            # IHDR bit depth
    img = load_image(buf.tobytes())
    assert np.array_equal(img.rgb, coffee)


def test_32bit_int_and_float_tiffs(chelsea):
    grey8 = np.asarray(Image.fromarray(chelsea).convert("L"))
    as_int = Image.fromarray(grey8.astype(np.int32) * 257)
    assert as_int.mode == "I"
    assert np.array_equal(load_image(encode(as_int, "TIFF")).rgb[:, :, 0], grey8)
    as_float = Image.fromarray(grey8.astype(np.float32) / 255.0)
    assert as_float.mode == "F"
    assert np.array_equal(load_image(encode(as_float, "TIFF")).rgb[:, :, 1], grey8)


def test_palette_png_with_transparency(astronaut):
    pal = Image.fromarray(astronaut).quantize(64)
    idx = np.array(pal)
    clear = 63
    idx[idx == clear] = 0
    idx[100:140, 200:260] = clear
    pal2 = Image.fromarray(idx)
    pal2.putpalette(pal.getpalette())
    data = encode(pal2, "PNG", transparency=clear)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "P" and "transparency" in check.info
    img = load_image(data)
    palette = np.array(pal.getpalette()[: 64 * 3], dtype=np.uint8).reshape(-1, 3)
    assert np.array_equal(img.rgb, palette[idx])
    assert img.alpha is not None
    assert np.array_equal(img.alpha, np.where(idx == clear, 0, 255).astype(np.uint8))


def test_greyscale_with_alpha_la(chelsea):
    grey = np.asarray(Image.fromarray(chelsea).convert("L"))
    alpha = np.tile(np.linspace(0, 255, grey.shape[1]).astype(np.uint8), (grey.shape[0], 1))
    la = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)])
    img = load_image(encode(la, "PNG"))
    for c in range(3):
        assert np.array_equal(img.rgb[:, :, c], grey)
    assert np.array_equal(img.alpha, alpha)


def test_rgba_keeps_alpha_aside_and_drops_opaque_alpha(coffee):
    alpha = np.full(coffee.shape[:2], 255, np.uint8)
    alpha[50:150, 60:300] = 0
    alpha[200:220] = 128
    img = load_image(encode(np.dstack([coffee, alpha]), "PNG"))
    assert np.array_equal(img.rgb, coffee) and np.array_equal(img.alpha, alpha)
    opaque = load_image(encode(np.dstack([coffee, np.full_like(alpha, 255)]), "PNG"))
    assert opaque.alpha is None and np.array_equal(opaque.rgb, coffee)


def test_bilevel_image(chelsea):
    grey = np.asarray(Image.fromarray(chelsea).convert("L"))
    bits = Image.fromarray(grey >= 128)
    assert bits.mode == "1"
    img = load_image(encode(bits, "BMP"))
    assert np.array_equal(img.rgb[:, :, 2], np.where(grey >= 128, 255, 0).astype(np.uint8))


# ----------------------------------------------------------------------------------------- orientation

EXPECTED_ORIENTATION = {  # from the EXIF definition of each value (how the stored rows map to the view)
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, -1)[::-1],
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(EXPECTED_ORIENTATION))
def test_exif_orientation_all_values(chelsea, orientation):
    stored = np.ascontiguousarray(chelsea[100:123, 150:187])     # 37 wide x 23 high
    exif = Image.Exif()
    exif[0x0112] = orientation
    img = load_image(encode(stored, "PNG", exif=exif))
    assert np.array_equal(img.rgb, EXPECTED_ORIENTATION[orientation](stored))


def test_jpeg_orientation_6_is_transposed(chelsea):
    exif = Image.Exif()
    exif[0x0112] = 6
    img = load_image(encode(chelsea, "JPEG", quality=95, exif=exif))
    h, w = chelsea.shape[:2]
    assert img.size == (h, w)
    assert mean_diff(img.rgb, np.rot90(chelsea, -1)) < 3
    assert mean_diff(img.rgb, np.rot90(chelsea, 1)) > 15


# ----------------------------------------------------------------------------------------- sources

def test_every_kind_of_source(tmp_path, chelsea):
    data = encode(chelsea, "PNG")
    path = tmp_path / "cat photo.png"
    path.write_bytes(data)
    with open(path, "rb") as f:
        from_file = load_image(f)
    for img in (load_image(path), load_image(str(path)), load_image(data), load_image(bytearray(data)),
                load_image(memoryview(data)), load_image(io.BytesIO(data)), from_file):
        assert np.array_equal(img.rgb, chelsea)


@pytest.mark.parametrize("bad", [3, None, 2.5, ["a.png"], np.zeros((4, 4, 3), np.uint8), True])
def test_wrong_type_is_an_image_error(bad):
    assert "expected a file path" in error_of(bad)


def test_text_mode_file_is_refused(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n")
    with open(p, "r", encoding="latin-1") as f:
        assert "binary mode" in error_of(f)


def test_missing_file_folder_and_odd_paths(tmp_path):
    assert error_of(tmp_path / "nope.jpg") == "could not read nope.jpg: the file does not exist"
    assert "folder" in error_of(tmp_path)
    long_name = tmp_path / ("x" * 300 + ".jpg")
    assert str(tmp_path) not in error_of(long_name)
    assert "not a valid file name" in error_of(str(tmp_path / "a\0b.jpg"))


def test_messages_name_only_the_base_name_on_one_line(tmp_path):
    weird = tmp_path / "holiday\nphoto.jpg"
    weird.write_bytes(b"")
    msg = error_of(weird)
    assert str(tmp_path) not in msg and "holiday?photo.jpg" in msg and "empty" in msg
    upload = SimpleNamespace(name="uploads/IMG_1.jpg", read=lambda: b"")
    assert error_of(upload) == "could not read IMG_1.jpg: the file is empty"
    assert error_of(b"", name="C:\\Users\\me\\a.png") == "could not read a.png: the file is empty"


# ----------------------------------------------------------------------------------------- bad files

def test_zero_byte_file(tmp_path):
    p = tmp_path / "photo.jpg"
    p.write_bytes(b"")
    assert error_of(p) == "could not read photo.jpg: the file is empty"


@pytest.mark.parametrize("fmt, kw", [
    ("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {}),
    ("TIFF", {}), ("TIFF", {"compression": "tiff_deflate"}),
])
@pytest.mark.parametrize("keep", [0.05, 0.5, 0.98])
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_truncated_files(coffee, fmt, kw, keep):
    data = encode(coffee[:200, :300], fmt, **kw)
    msg = error_of(data[: int(len(data) * keep)], name=f"photo.{fmt.lower()}")
    assert msg.startswith(f"could not read photo.{fmt.lower()}: the file is truncated")


def test_corrupt_png_is_damaged_not_truncated(chelsea):
    data = bytearray(encode(chelsea, "PNG"))
    idat = data.index(b"IDAT")
    for i in range(idat + 200, idat + 400):
        data[i] ^= 0x5A
    msg = error_of(bytes(data))
    assert "damaged" in msg and "PNG" in msg


def test_garbage_after_a_png_signature():
    assert "damaged" in error_of(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


@pytest.mark.parametrize("content, expect", [
    (b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nendobj\n", "PDF"),
    ("Liebe Grüße,\nthis is a plain text file.\n".encode(), "text file"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10"/>', "SVG"),
    (b"PK\x03\x04" + b"\x00" * 60, "zip"),
    (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 40, "video"),
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not an image in a supported format"),
])
def test_non_images(tmp_path, content, expect):
    p = tmp_path / "upload.jpg"
    p.write_bytes(content)
    msg = error_of(p)
    assert msg.startswith("could not read upload.jpg: ") and expect in msg


def test_photoshop_file_is_refused_by_name():
    assert "Photoshop" in error_of(b"8BPS\x00\x01" + b"\x00" * 100)


# ----------------------------------------------------------------------------------------- size limits

def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR (with a correct CRC) claims another size: cheap to make, never decoded."""
    png = encode(np.zeros((1, 1), np.uint8), "PNG")
    assert png[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + png[24:29]
    return png[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + png[33:]


def test_decompression_bomb_png_is_refused():
    msg = error_of(png_claiming(100_000, 100_000), name="bomb.png")
    assert msg.startswith("could not read bomb.png: the image is too large")


def test_over_our_limit_but_under_pillows_is_refused_from_the_header(monkeypatch):
    assert 8000 * 8000 > MAX_PIXELS
    def no_decoding(self):
        raise AssertionError("pixels were decoded before the size check")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    msg = error_of(png_claiming(8000, 8000))
    assert "too large" in msg and "8000x8000" in msg and "60 MP" in msg


def test_max_pixels_and_side_limits(chelsea):
    data = encode(chelsea, "PNG")
    assert "too large" in error_of(data, max_pixels=chelsea.shape[0] * chelsea.shape[1] - 1)
    assert load_image(data, max_pixels=chelsea.shape[0] * chelsea.shape[1]).size == (451, 300)
    assert "too large" in error_of(png_claiming(70_000, 1))
    with pytest.raises(InvalidOptionError):
        load_image(data, max_pixels=0)


def test_jpeg_header_bomb_is_refused(chelsea):
    data = bytearray(encode(chelsea, "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", 65_000, 65_000)
    assert "too large" in error_of(bytes(data))


def test_decompression_bomb_warning_as_error_is_caught():
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        msg = error_of(png_claiming(10_000, 10_000), max_pixels=200_000_000)
    assert "too large" in msg


# ----------------------------------------------------------------------------------------- LoadedImage

def test_loaded_image_is_immutable_and_hash_checked(chelsea):
    img = load_image(encode(chelsea, "PNG"))
    with pytest.raises(ValueError):
        img.rgb[0, 0, 0] = 1
    assert LoadedImage(chelsea.copy()).hash == img.hash
    with pytest.raises(InvalidOptionError):
        LoadedImage(chelsea, hash="0" * 64)
    with pytest.raises(InvalidOptionError):
        LoadedImage(chelsea[:, :, 0])


# ----------------------------------------------------------------------------------------- preview

SIZES = [(1, 1), (1, 700), (700, 1), (451, 300), (300, 451), (1024, 1024), (1025, 7), (333, 1025),
         (2999, 4001), (4000, 3000)]


def sample(n: int, k: int = 97) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist()))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("max_side", [1024, 100, 37])
def test_preview_round_trip_and_geometry(size, max_side):
    w, h = size
    prev = make_preview(np.zeros((h, w, 3), np.uint8), max_side=max_side)
    pw, ph = prev.size
    assert prev.original_size == (w, h)
    assert prev.rgb.shape == (ph, pw, 3)
    if max(w, h) <= max_side:
        assert (pw, ph) == (w, h) and prev.scale == 1.0          # never upscales
    else:
        assert max(pw, ph) == max_side and min(pw, ph) >= 1
        assert abs(pw - max(1.0, w * prev.scale)) <= 0.5 + 1e-9  # aspect kept to the pixel
        assert abs(ph - max(1.0, h * prev.scale)) <= 0.5 + 1e-9
    for x in sample(w):
        for y in sample(h, 13):
            px, py = prev.to_preview(x, y)
            assert -0.5 <= px <= pw - 0.5 and -0.5 <= py <= ph - 0.5
            assert prev.to_original(px, py) == (x, y)
    # Each preview pixel maps to an original pixel inside the area it covers.
    for px in sample(pw):
        for py in sample(ph, 11):
            ox, oy = prev.to_original(px, py)
            assert px * w / pw - 1e-9 <= ox + 1 and ox <= (px + 1) * w / pw + 1e-9
            assert py * h / ph - 1e-9 <= oy + 1 and oy <= (py + 1) * h / ph + 1e-9
    assert prev.to_original(-40, -3.5) == (0, 0)
    assert prev.to_original(pw + 50, ph + 1e6) == (w - 1, h - 1)


@pytest.mark.parametrize("display_width", [1, 99, 150, 300, 700.5])
def test_from_display_maps_through_any_displayed_width(coffee, display_width):
    h, w = coffee.shape[:2]
    prev = make_preview(coffee, max_side=150)
    pw, ph = prev.size
    dh = display_width * ph / pw
    for x in np.linspace(0, display_width - 1, 41):
        for y in np.linspace(0, dh - 1, 7):
            ox, oy = prev.from_display(float(x), float(y), display_width)
            fx, fy = (x + 0.5) * w / display_width, (y + 0.5) * h / dh   # click centre in the original
            assert ox <= fx <= ox + 1 or ox in (0, w - 1)
            assert oy <= fy <= oy + 1 or oy in (0, h - 1)
    assert prev.from_display(3, 4, pw) == prev.to_original(3, 4)
    assert prev.from_display(3, 4, display_width, dh) == prev.from_display(3, 4, display_width)


def test_preview_shows_what_the_click_hits(coffee):
    marked = coffee.copy()
    marked[200:260, 300:360] = (255, 0, 0)
    prev = make_preview(marked, max_side=150)
    px, py = prev.to_preview(330, 230)
    r, g, b = prev.rgb[round(py), round(px)]
    assert r > 200 and g < 60 and b < 60
    # the same spot clicked on the preview shown twice as wide lands inside the red square
    ox, oy = prev.from_display((px + 0.5) * 2 - 0.5, (py + 0.5) * 2 - 0.5, prev.size[0] * 2)
    assert 300 <= ox < 360 and 200 <= oy < 260
    assert mean_diff(prev.rgb.mean(axis=(0, 1)), marked.mean(axis=(0, 1))) < 3


def test_preview_of_masks_and_rgba(coffee):
    mask = np.zeros(coffee.shape[:2], np.uint8)
    mask[:, :300] = 255
    prev = make_preview(mask, max_side=60)
    assert prev.rgb.shape == (40, 60) and prev.rgb[:, :29].min() == 255 and prev.rgb[:, 31:].max() == 0
    assert make_preview(np.dstack([coffee, mask]), max_side=60).rgb.shape == (40, 60, 4)


def test_preview_rejects_bad_input(coffee):
    prev = make_preview(coffee, max_side=100)
    for bad in (lambda: prev.to_original(float("nan"), 1), lambda: prev.from_display(1, 1, 0),
                lambda: make_preview(coffee, max_side=0), lambda: make_preview(coffee.astype(float)),
                lambda: prev.to_preview("3", 1)):
        with pytest.raises(InvalidOptionError):
            bad()


# ----------------------------------------------------------------------------------------- encoding

def test_encode_png_modes(chelsea):
    mask = np.zeros(chelsea.shape[:2], np.uint8)
    mask[50:120, 80:200] = 255
    for arr, mode in ((mask, "L"), (chelsea, "RGB"), (np.dstack([chelsea, mask]), "RGBA")):
        with Image.open(io.BytesIO(encode_png(arr))) as im:
            assert im.mode == mode and np.array_equal(np.asarray(im), arr)
    with Image.open(io.BytesIO(encode_png(mask > 0))) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), mask)
    with Image.open(io.BytesIO(encode_png(chelsea, text={"parameters": "seed=7 prompt=beach ☀"}))) as im:
        assert im.text["parameters"] == "seed=7 prompt=beach ☀"
    with pytest.raises(InvalidOptionError):
        encode_png(chelsea.astype(np.float32))


def test_encode_jpeg(coffee):
    data = encode_jpeg(coffee, quality=90)
    assert data[:3] == b"\xff\xd8\xff"
    assert mean_diff(load_image(data).rgb, coffee) < 4
    assert len(encode_jpeg(coffee, quality=20)) < len(data)
    for bad in (lambda: encode_jpeg(np.dstack([coffee, coffee[:, :, 0]])), lambda: encode_jpeg(coffee, quality=0)):
        with pytest.raises(InvalidOptionError):
            bad()


def test_save_image_is_atomic_and_follows_the_suffix(tmp_path, chelsea):
    alpha = np.full(chelsea.shape[:2], 255, np.uint8)
    alpha[:100] = 0
    rgba = np.dstack([chelsea, alpha])
    out = save_image(rgba, tmp_path / "sub" / "cut.png")
    assert out == tmp_path / "sub" / "cut.png"
    back = load_image(out)
    assert np.array_equal(back.rgb, chelsea) and np.array_equal(back.alpha, alpha)
    assert load_image(save_image(chelsea, tmp_path / "a.JPG")).format == "JPEG"
    webp = load_image(save_image(rgba, tmp_path / "a.webp"))
    assert webp.format == "WEBP" and webp.alpha is not None and webp.alpha[:100].max() < 10
    for bad_name, arr in (("a.gif", chelsea), ("noext", chelsea), ("b.jpg", rgba)):
        with pytest.raises(InvalidOptionError):
            save_image(arr, tmp_path / bad_name)
    assert sorted(os.listdir(tmp_path)) == ["a.JPG", "a.webp", "sub"]
    assert os.listdir(tmp_path / "sub") == ["cut.png"]
