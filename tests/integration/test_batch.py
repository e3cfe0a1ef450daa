"""`python -m core batch`: every photo of a folder, resumable, a bad photo reported and skipped."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.history import open_store
from core.masks import grow
from cli_kit import assert_one_line_error, cli


def _ellipse(h, w):
    yy, xx = np.mgrid[:h, :w]
    return np.where(((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1, 255, 0).astype(np.uint8)


@pytest.fixture
def folder(tmp_path, chelsea, coffee):
    photos, masks = tmp_path / "shoot", tmp_path / "masks"
    photos.mkdir(), masks.mkdir()
    for name, img in (("cat", chelsea[:200, :300]), ("cup", coffee[:180, :240])):
        Image.fromarray(img).save(photos / f"{name}.png")
        Image.fromarray(_ellipse(*img.shape[:2])).save(masks / f"{name}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "notes.txt").write_text("not a photo")
    return photos, masks


def test_a_folder_is_done_photo_by_photo_and_a_rerun_skips_what_is_done(folder, tmp_path, chelsea):
    photos, masks = folder
    out = tmp_path / "out"
    first = cli("batch", photos, "--out", out, "--masks", masks, "--background", "color:#00ff00",
                check=False)
    assert first.returncode == 1                                   # one photo failed
    assert "broken.jpg" in first.stderr and "Traceback" not in first.stderr
    assert "2 done, 0 already done, 1 failed" in first.stdout
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "cup.png"]
    cat = np.asarray(Image.open(out / "cat.png"))
    inside = grow(_ellipse(200, 300), -10) == 255        # the CLI feathers the edge by default
    assert np.array_equal(cat[inside], chelsea[:200, :300][inside])
    assert (cat[0, 0] == (0, 255, 0)).all()
    runs = open_store().list_runs(limit=10)
    assert sorted(r.source_name for r in runs) == ["shoot/cat.png", "shoot/cup.png"]

    (out / "cup.png").unlink()                                     # e.g. killed while writing it
    again = cli("batch", photos, "--out", out, "--masks", masks, "--background", "color:#00ff00",
                check=False)
    assert "1 done, 1 already done, 1 failed" in again.stdout
    assert len(open_store().list_runs(limit=10)) == 3              # only the missing one ran again


def test_relative_clicks_fit_every_photo_size(folder, tmp_path):
    photos, _ = folder
    (photos / "broken.jpg").unlink()
    out = tmp_path / "out"
    proc = cli("batch", photos, "--out", out, "--rel-box", "0.2,0.2,0.8,0.8", "--segmenter", "grabcut",
               "--background", "transparent", "--edge", "matte", "--name", "catalogue")
    assert "2 done" in proc.stdout
    for name in ("cat", "cup"):
        rgba = np.asarray(Image.open(out / f"{name}.png"))
        assert rgba.shape[2] == 4 and rgba[..., 3].max() == 255 and rgba[0, 0, 3] == 0
    runs = open_store().list_runs(limit=10)
    assert {r.source_name for r in runs} == {"catalogue/cat.png", "catalogue/cup.png"}
    assert all(r.spec.mask.edge == "matte:guided" and r.spec.subject.box for r in runs)


@pytest.mark.parametrize("args, fragment", [
    (("--rel-point", "1.5,0.5"), "relative point"),
    (("--rel-box", "0.8,0.2,0.2,0.9"), "relative box"),
    ((), "subject"),
    (("--point", "10,10"), "--rel-point"),
])
def test_bad_batch_arguments_are_one_line(folder, tmp_path, args, fragment):
    photos, _ = folder
    proc = cli("batch", photos, "--out", tmp_path / "out", "--background", "color:#fff", *args, check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, fragment)


def _tree(folder):
    """{name: bytes} of a folder, to show nothing in it changed."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("where", ["photo folder", "mask folder", "link to the photo folder"])
def test_out_dir_that_is_an_input_folder_is_refused_before_any_work(folder, tmp_path, where):
    photos, masks = folder
    Image.open(photos / "cup.png").save(photos / "cat-2.png")    # a photo named like cat's variant 2
    out = {"photo folder": photos, "mask folder": masks, "link to the photo folder": tmp_path / "link"}[where]
    if where.startswith("link"):
        out.symlink_to(photos)
    before = _tree(photos), _tree(masks)
    proc = cli("batch", photos, "--out", out, "--masks", masks, "--background", "sd", "--prompt", "a beach",
               "--variants", "2", "--model", "tiny", check=False)
    assert_one_line_error(proc, "--out", "folder", "choose another folder")
    assert (_tree(photos), _tree(masks)) == before                  # nothing written over
    assert not open_store().list_runs(limit=10)                    # and nothing run


def test_an_output_that_is_an_input_through_a_link_is_refused_not_already_done(folder, tmp_path):
    photos, masks = folder
    out = tmp_path / "out"
    out.mkdir()
    (out / "cat.png").symlink_to(photos / "cat.png")             # writing cat.png would replace the photo
    before = _tree(photos)
    proc = cli("batch", photos, "--out", out, "--masks", masks, "--background", "color:#00ff00", check=False)
    assert_one_line_error(proc, "cat.png", "would replace the input")
    assert _tree(photos) == before and not open_store().list_runs(limit=10)


def test_photos_sharing_a_stem_get_their_extension_in_the_name(tmp_path, chelsea, coffee):
    photos, masks, out = tmp_path / "shoot", tmp_path / "masks", tmp_path / "out"
    photos.mkdir(), masks.mkdir()
    Image.fromarray(chelsea[:200, :300]).save(photos / "a.png")
    Image.fromarray(coffee[:200, :300]).save(photos / "a.jpg", quality=95)
    Image.fromarray(coffee[100:300, :300]).save(photos / "b.png")
    for stem in ("a", "b"):
        Image.fromarray(_ellipse(200, 300)).save(masks / f"{stem}.png")
    args = ("batch", photos, "--out", out, "--masks", masks, "--background", "color:#00ff00")
    assert "3 done, 0 already done, 0 failed" in cli(*args).stdout
    assert sorted(p.name for p in out.iterdir()) == ["a-jpg.png", "a-png.png", "b.png"]
    centre = (100, 150)
    assert np.array_equal(np.asarray(Image.open(out / "a-png.png"))[centre], chelsea[100, 150])
    assert np.abs(np.asarray(Image.open(out / "a-jpg.png"))[centre].astype(int)
                  - coffee[100, 150].astype(int)).max() < 12    # the JPEG's own pixels
    assert "0 done, 3 already done, 0 failed" in cli(*args).stdout   # a rerun resumes by the same names


def test_a_variant_name_that_is_another_photos_name_is_refused(tmp_path, chelsea):
    photos, out = tmp_path / "shoot", tmp_path / "out"
    photos.mkdir()
    for name in ("a.png", "a-2.png"):
        Image.fromarray(chelsea[:120, :160]).save(photos / name)
    proc = cli("batch", photos, "--out", out, "--rel-box", "0.2,0.2,0.8,0.8", "--segmenter", "grabcut",
               "--background", "sd", "--prompt", "a beach", "--variants", "2", "--model", "tiny", check=False)
    assert_one_line_error(proc, "variant 2 of a.png", "a-2.png", "rename")
    assert not out.exists() and not open_store().list_runs(limit=10)


def test_a_missing_mask_folder_is_one_line_before_any_work(folder, tmp_path):
    photos, _ = folder
    out = tmp_path / "out"
    proc = cli("batch", photos, "--out", out, "--masks", tmp_path / "nonexistent",
               "--background", "color:#00ff00", check=False)
    assert_one_line_error(proc, "mask folder not found", "nonexistent")
    assert not out.exists()


def test_out_inside_the_image_store_is_refused_before_creating_it(folder, tmp_path):
    photos, masks = folder
    store = tmp_path / "data" / "images"                           # BACKDROP_DATA_DIR (conftest)
    proc = cli("batch", photos, "--out", store / "results", "--masks", masks,
               "--background", "color:#00ff00", check=False)
    assert_one_line_error(proc, "history storage")
    assert not (store / "results").exists()


def test_a_photo_with_no_subject_found_fails_with_one_line_and_no_output(tmp_path, chelsea):
    photos, out = tmp_path / "shoot", tmp_path / "out"
    photos.mkdir()
    Image.fromarray(chelsea[:200, :300]).save(photos / "cat.png")
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(photos / "grey.png")   # nothing to find
    proc = cli("batch", photos, "--out", out, "--rel-box", "0.2,0.2,0.8,0.8", "--segmenter", "grabcut",
               "--background", "color:#00ff00", check=False)
    assert proc.returncode == 1 and "1 done, 0 already done, 1 failed" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: grey.png: no subject found"), proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["cat.png"]

    single = cli("replace", photos / "grey.png", "--out", tmp_path / "grey-out.png", "--box", "60,40,240,160",
                 "--segmenter", "grabcut", "--background", "color:#00ff00", check=False)
    assert_one_line_error(single, "no subject found", "grabcut")
    assert not (tmp_path / "grey-out.png").exists()


def test_client_mode_uses_the_same_names(service, monkeypatch, tmp_path, chelsea, coffee):
    """Team mode (BACKDROP_SERVER_URL, --workers): same-stem photos both run, each to its own file."""
    from serve_kit import TOKEN
    monkeypatch.setenv("BACKDROP_SERVER_URL", service["url"])
    monkeypatch.setenv("BACKDROP_API_TOKEN", TOKEN)
    photos, masks, out = tmp_path / "remote-stems", tmp_path / "masks", tmp_path / "out"
    photos.mkdir(), masks.mkdir()
    Image.fromarray(chelsea[:120, :160]).save(photos / "a.png")
    Image.fromarray(coffee[:120, :160]).save(photos / "a.bmp")
    Image.fromarray(_ellipse(120, 160)).save(masks / "a.png")
    proc = cli("batch", photos, "--out", out, "--masks", masks, "--background", "color:#102030",
               "--workers", "2")
    assert "2 done, 0 already done, 0 failed" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["a-bmp.png", "a-png.png"]
    assert np.array_equal(np.asarray(Image.open(out / "a-png.png"))[60, 80], chelsea[60, 80])
    assert np.array_equal(np.asarray(Image.open(out / "a-bmp.png"))[60, 80], coffee[60, 80])
