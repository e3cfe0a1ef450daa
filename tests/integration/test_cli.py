"""The command-line contract (docs/CONTRACTS.md): exit codes, one-line errors, full-size outputs, history."""
from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_kit import assert_one_line_error, cli




@pytest.fixture
def coffee_rotated(tmp_path, coffee) -> Path:
    """The coffee photo stored sideways with EXIF Orientation=6 (as phones do): 600x400 stored,
    400x600 once EXIF is applied."""
    stored = np.ascontiguousarray(np.rot90(coffee, k=1))  # the camera's raw orientation
    img = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "coffee.jpg"
    img.save(path, quality=95, exif=exif)
    return path


@pytest.fixture
def cat_png(tmp_path, chelsea) -> Path:
    path = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(path)
    return path


def test_help_lists_commands():
    out = cli("--help").stdout
    for command in ("segment", "replace", "history", "models"):
        assert command in out


def test_history_help_names_every_subcommand():
    top = next(line for line in cli("--help").stdout.splitlines() if line.split()[:1] == ["history"])
    assert "list or export" in top and "release" in top
    out = cli("history", "--help").stdout
    for sub in ("list", "export", "store"):
        assert any(line.split()[:1] == [sub] for line in out.splitlines()), out
    assert "store forget ID" in " ".join(out.split())
    assert "forget" in cli("history", "store", "--help").stdout


def test_segment_grabcut_writes_mask_at_exif_corrected_size(tmp_path, coffee_rotated, coffee):
    out = tmp_path / "mask.png"
    # The cup sits in the middle of the (upright) coffee photo.
    cli("segment", coffee_rotated, "--out", out, "--point", "300,200", "--segmenter", "grabcut")
    mask = Image.open(out)
    assert mask.mode == "L"
    assert mask.size == (coffee.shape[1], coffee.shape[0])  # upright size, not the stored one
    m = np.asarray(mask)
    assert set(np.unique(m)) <= {0, 255}
    assert m[200, 300] == 255 and m[0, 0] == 0


def test_replace_color_keeps_subject_and_records_history(tmp_path, cat_png, chelsea):
    mask = np.zeros(chelsea.shape[:2], np.uint8)
    mask[60:240, 120:330] = 255
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    out = tmp_path / "out.png"
    cli("replace", cat_png, "--out", out, "--mask", mask_path, "--background", "color:#00ff00", "--feather", "0")
    result = np.asarray(Image.open(out).convert("RGB"))
    assert result.shape == chelsea.shape
    assert np.array_equal(result[mask == 255], chelsea[mask == 255])
    assert (result[mask == 0] == [0, 255, 0]).all()

    listed = json.loads(cli("history", "list", "--json").stdout)
    assert len(listed) == 1 and listed[0]["status"] == "succeeded"
    assert "color:#00ff00" in json.dumps(listed[0])


def test_replace_flags_become_the_recorded_run_spec(tmp_path, cat_png):
    from core.spec import Click, MaskOptions, RunSpec, Subject

    out = tmp_path / "out.png"
    cli("replace", cat_png, "--out", out, "--point", "220,150", "--point", "20,20,0",
        "--box", "100,50,400,280", "--candidate", "0", "--segmenter", "grabcut",
        "--background", "blur:7.5", "--grow", "3", "--fill-holes", "--min-area", "40")
    [row] = json.loads(cli("history", "list", "--json").stdout)
    assert RunSpec.from_json(row["spec"]) == RunSpec(
        subject=Subject(clicks=[Click(220, 150), Click(20, 20, 0)], box=(100, 50, 400, 280),
                        candidate=0, segmenter="grabcut"),
        mask=MaskOptions(grow=3, fill_holes=True, min_area=40),   # feather: the spec's default, 0
        background="blur:7.5")
    help_text = cli("replace", "--help").stdout
    assert "--min-area N" in help_text and "denoising steps" in help_text   # help from the spec


@pytest.mark.parametrize("flags, words", [
    (["--steps", "0"], "steps must be from 1 to 150, got 0"),
    (["--guidance", "31"], "guidance must be from 0 to 30"),
    (["--scheduler", "warp"], "unknown scheduler 'warp'"),
    (["--steps", "2", "--strength", "0.2"], "steps x strength must be at least 1"),
])
def test_replace_values_are_checked_by_the_spec_before_any_work(tmp_path, cat_png, flags, words):
    out = tmp_path / "o.png"
    proc = cli("replace", cat_png, "--out", out, "--point", "10,10", "--segmenter", "grabcut",
               "--background", "sd", "--prompt", "x", "--model", "tiny", *flags, check=False)
    assert_one_line_error(proc, words)
    assert not out.exists()


def test_replace_fast_mode_uses_the_modes_defaults_and_records_them(tmp_path, cat_png, tiny_fast,
                                                                   monkeypatch):
    monkeypatch.delenv("BACKDROP_MODE")            # the machine's default: fast without CUDA
    out = tmp_path / "fast.png"
    cli("replace", cat_png, "--out", out, "--point", "220,150", "--segmenter", "grabcut",
        "--background", "sd", "--prompt", "a sunny beach", "--seed", "3", "--model", "tiny")
    [row] = json.loads(cli("history", "list", "--json").stdout)
    gen = row["spec"]["generation"]
    assert (gen["mode"], gen["steps"], gen["guidance"], gen["scheduler"], gen["lora"]) == (
        "fast", 4, 1.0, "lcm", "tiny-lcm")
    proc = cli("replace", cat_png, "--out", tmp_path / "q.png", "--point", "220,150", "--segmenter",
               "grabcut", "--background", "sd", "--prompt", "x", "--model", "tiny", "--mode", "fast",
               "--scheduler", "euler", check=False)
    assert_one_line_error(proc, "fast mode samples with lcm or tcd")


def test_models_download_fetches_fast_mode_add_ons(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path / "w"))
    out = cli("models", "download", "tiny-lcm").stdout
    assert out.startswith("tiny-lcm (fast): ") and (tmp_path / "w").is_dir()
    listed = cli("models", "list").stdout
    assert any(line.split()[:2] == ["fast", "tiny-lcm"] and "present" in line
               for line in listed.splitlines())


def test_history_list_batch_lists_one_batchs_runs(tmp_path, chelsea):
    """`history list --batch NAME`: only the runs of that batch (named after its folder, or
    --name), newest first; a run of one photo is in no batch."""
    mask = np.zeros((60, 80), np.uint8)
    mask[15:45, 20:60] = 255
    for folder, count in (("shots", 2), ("mugs", 1)):
        photos, masks = tmp_path / folder, tmp_path / f"{folder}-masks"
        photos.mkdir(), masks.mkdir()
        for k in range(count):
            Image.fromarray(chelsea[k * 10:k * 10 + 60, :80]).save(photos / f"p{k}.png")
            Image.fromarray(mask).save(masks / f"p{k}.png")
    cli("batch", tmp_path / "shots", "--out", tmp_path / "out1", "--masks", tmp_path / "shots-masks",
        "--background", "color:#ffffff")
    cli("batch", tmp_path / "mugs", "--out", tmp_path / "out2", "--masks", tmp_path / "mugs-masks",
        "--background", "color:#ffffff", "--name", "summer sale")
    cli("replace", tmp_path / "shots" / "p0.png", "--out", tmp_path / "one.png",     # one photo
        "--mask", tmp_path / "shots-masks" / "p0.png", "--background", "color:#000000")
    rows = json.loads(cli("history", "list", "--json", "--batch", "shots").stdout)
    assert sorted((r["source_name"], r["batch"]) for r in rows) == [("shots/p0.png", "shots"),
                                                                   ("shots/p1.png", "shots")]
    [sale] = json.loads(cli("history", "list", "--json", "--batch", "summer sale").stdout)
    assert sale["source_name"] == "summer sale/p0.png" and sale["batch"] == "summer sale"
    text_rows = cli("history", "list", "--batch", "summer sale").stdout.splitlines()
    assert len(text_rows) == 1 and text_rows[0].split()[0] == str(sale["id"])
    every = json.loads(cli("history", "list", "--json").stdout)
    assert len(every) == 4 and every[0]["source_name"] == "p0.png" and every[0]["batch"] is None
    assert cli("history", "list", "--batch", "nope").stdout.strip() == "no runs in the batch “nope”"


def _cells(text: str) -> int:
    """Terminal cells `text` takes (a wide character two, a combining mark none)."""
    import unicodedata
    return sum(0 if unicodedata.category(c) in ("Mn", "Me", "Cf")
               else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_history_list_names_each_runs_photo_in_an_aligned_column():
    """`history list` shows each run's source file name (a batch's rows differ by it): as text,
    control characters escaped, a long name cut in the middle with "…", the columns after it
    aligned (wide characters too); with --batch the batch's name is not repeated on each row."""
    from core.history import open_store
    from runs import record

    store = open_store()
    src = np.zeros((4, 4, 3), np.uint8)
    long_name = "a" * 50 + "-final-v2.jpg"
    wide = "写真の名前がとても長いファイル.jpg"
    for name in ("IMG_0001.jpg", "evil\x1b[2J\u202e.png", long_name, wide, ""):
        record(store, source=src, source_name=name)
    for k in (1, 2):
        record(store, source=src, source_name=f"list-shoot/IMG_{k}.jpg", batch="list-shoot")
    record(store, source=src, source_name="scene.jpg", background="sd", prompt="harbour at dusk",
           model="someone/a-very-long-inpainting-model-id-v2")
    out = cli("history", "list").stdout
    assert "\x1b" not in out and "\u202e" not in out and "evil\\x1b[2J\\u202e.png" in out
    lines = out.splitlines()
    assert len(lines) == 8 and any("  IMG_0001.jpg  " in line for line in lines)
    assert "list-shoot/IMG_1.jpg" in out and "list-shoot/IMG_2.jpg" in out
    [cut] = [line for line in lines if "aaa" in line]
    assert long_name not in cut and "aaa…" in cut and "v2.jpg  " in cut      # its start and end
    assert any("写真の名前" in line and "…" in line for line in lines)
    text = ["harbour at dusk" if "harbour" in line else "color:#00ff00" for line in lines]
    starts = {_cells(line[:line.index(t)]) for line, t in zip(lines, text)}
    assert len(starts) == 1, lines                   # the columns after the names line up
    assert "someone/a-very-long-inpainting-model-id-v2" not in out     # a long model id is cut
    batch_rows = cli("history", "list", "--batch", "list-shoot").stdout.splitlines()
    assert [line.split()[3] for line in batch_rows] == ["IMG_2.jpg", "IMG_1.jpg"]


def test_replace_no_history_records_nothing(tmp_path, cat_png):
    out = tmp_path / "out.png"
    cli("replace", cat_png, "--out", out, "--point", "220,150", "--segmenter", "grabcut",
        "--background", "blur:12", "--no-history")
    assert Image.open(out).size == Image.open(cat_png).size
    assert json.loads(cli("history", "list", "--json").stdout) == []


def test_replace_transparent_alpha_is_mask(tmp_path, cat_png, chelsea):
    mask = np.zeros(chelsea.shape[:2], np.uint8)
    mask[50:250, 100:350] = 255
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    out = tmp_path / "cut.png"
    cli("replace", cat_png, "--out", out, "--mask", mask_path, "--background", "transparent", "--feather", "0")
    rgba = np.asarray(Image.open(out))
    assert rgba.shape == (*chelsea.shape[:2], 4)
    assert np.array_equal(rgba[..., 3], mask)
    assert np.array_equal(rgba[..., :3][mask == 255], chelsea[mask == 255])


def test_replace_sd_tiny_model_then_export(tmp_path, cat_png, chelsea, tiny_inpaint):
    out = tmp_path / "sd.png"
    cli("replace", cat_png, "--out", out, "--point", "220,150", "--segmenter", "grabcut",
        "--background", "sd", "--prompt", "a sunny beach", "--seed", "7", "--steps", "2", "--model", "tiny")
    result = np.asarray(Image.open(out).convert("RGB"))
    assert result.shape == chelsea.shape
    assert not np.array_equal(result, chelsea)
    runs = json.loads(cli("history", "list", "--json").stdout)
    assert runs[0]["prompt"] == runs[0]["spec"]["generation"]["prompt"] == "a sunny beach"
    zip_path = tmp_path / "export.zip"
    cli("history", "export", zip_path, "--ids", str(runs[0]["id"]))
    with zipfile.ZipFile(zip_path) as z:
        names = z.namelist()
        assert "manifest.json" in names and "manifest.csv" in names
        pngs = [n for n in names if n.endswith(".png") and "mask" not in n]
        assert pngs
        meta = Image.open(io.BytesIO(z.read(pngs[0]))).text["parameters"]
        assert "a sunny beach" in meta and "Seed: 7" in meta


@pytest.mark.parametrize("args, fragments", [
    (["replace", "{img}", "--out", "{tmp}/o.png", "--point", "10,10", "--background", "sd",
      "--prompt", "x", "--model", "sd15-inpainting", "--segmenter", "grabcut"],
     ["sd15-inpainting", "python -m core models download"]),
    (["segment", "{img}", "--out", "{tmp}/m.png", "--point", "10,10", "--segmenter", "sam-vit-b"],
     ["sam_vit_b_01ec64.pth", "python -m core models download sam-vit-b"]),
    (["segment", "{tmp}/nothing.jpg", "--out", "{tmp}/m.png", "--point", "1,1"], ["nothing.jpg"]),
    (["segment", "{img}", "--out", "{tmp}/m.png"], ["--point"]),
    (["segment", "{img}", "--out", "{tmp}/m.png", "--point", "1,two"], ["bad point"]),
    (["replace", "{img}", "--out", "{tmp}/o.png", "--point", "1,1", "--background", "paint:red"], ["paint"]),
    (["replace", "{img}", "--out", "{tmp}/o.png", "--point", "1,1", "--background", "color:#12345"], ["#12345"]),
    (["replace", "{img}", "--out", "{tmp}/o.png", "--point", "1,1", "--background", "image:{tmp}/none.png",
      "--segmenter", "grabcut"], ["none.png"]),
    (["replace", "{img}", "--out", "{tmp}/o.png", "--point", "1,1", "--background", "sd"], ["--prompt"]),
    (["replace", "{img}", "--out", "{tmp}/o.png", "--point", "1,1", "--background", "sd", "--prompt", "x",
      "--steps", "0", "--model", "tiny"], ["steps"]),
    (["history", "export", "{tmp}/x.zip"], ["--favorites"]),
    (["models", "download", "no-such-model"], ["no-such-model"]),
])
def test_bad_input_exits_2_with_one_line(tmp_path, cat_png, args, fragments):
    args = [a.format(img=cat_png, tmp=tmp_path) for a in args]
    assert_one_line_error(cli(*args, check=False), *fragments)


def test_corrupt_image_is_a_one_line_error(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    assert_one_line_error(cli("segment", bad, "--out", tmp_path / "m.png", "--point", "1,1", check=False),
                          "broken.jpg")
    assert not (tmp_path / "m.png").exists()


def test_models_list_shows_presence(tiny_sam):
    out = cli("models", "list").stdout
    line = next(l for l in out.splitlines() if l.split()[:2] == ["segment", "tiny"])
    assert "present" in line
    vit_b = next(l for l in out.splitlines() if "sam-vit-b" in l)
    assert "missing" in vit_b


def assert_only_the_error_line(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """stderr is exactly the one `error:` line: no library progress bar (they redraw with \\r,
    so a blank-line filter would not see them), warning or log record before or after it."""
    line = assert_one_line_error(proc, *fragments)
    assert proc.stderr == line + "\n", proc.stderr


def test_a_library_warning_stays_off_the_error_line(tmp_path, chelsea):
    """A photo with corrupt EXIF makes PIL warn ("Tag data larger than file") while it is read;
    the run then fails (the segmenter is not downloaded): only the `error:` line reaches stderr."""
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "a description"                              # ImageDescription, 14 bytes
    Image.fromarray(chelsea).save(buf, "JPEG", exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    entry = data.index(b"\x01\x0e\x00\x02", data.index(b"Exif\x00\x00"))
    data[entry + 4:entry + 8] = (0x7FFF).to_bytes(4, "big")   # its byte count: far past the file
    photo = tmp_path / "odd-exif.jpg"
    photo.write_bytes(bytes(data))
    proc = cli("segment", photo, "--out", tmp_path / "m.png", "--point", "10,10", "--segmenter",
               "sam-vit-b", check=False)
    assert_only_the_error_line(proc, "python -m core models download sam-vit-b")


def test_library_bars_and_log_lines_stay_off_stderr(tmp_path, cat_png, tiny_fast, weights_dir, monkeypatch):
    """The tiny pipeline in fast mode: diffusers logs warnings through its own handler (the tiny
    autoencoder's config, the LoRA's missing text-encoder keys) and diffusers and transformers draw
    "Loading pipeline components" / "Loading weights" bars. A run prints nothing on stderr, and a
    run that fails after the load (a corrupt LoRA) only its `error:` line."""
    import shutil
    weights = tmp_path / "weights"
    for name in ("tiny-inpainting", "tiny-lcm-lora", "tiny-taesd"):
        shutil.copytree(weights_dir / name, weights / name)
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(weights))
    run = ["replace", cat_png, "--point", "220,150", "--segmenter", "grabcut", "--background", "sd",
           "--prompt", "a quiet harbour", "--model", "tiny", "--mode", "fast"]
    proc = cli(*run, "--out", tmp_path / "ok.png")
    assert proc.stderr == "" and proc.stdout.startswith("wrote ")
    lora = weights / "tiny-lcm-lora" / "pytorch_lora_weights.safetensors"
    lora.write_bytes(lora.read_bytes()[:500])
    proc = cli(*run, "--out", tmp_path / "bad.png", check=False)
    assert_only_the_error_line(proc, "LoRA 'tiny-lcm'", "python -m core models download tiny-lcm")
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("given, flags, fragment", [
    ("black", [], "all black"),
    ("square", ["--grow", "-200"], "empty after the mask options"),
])
def test_a_mask_that_keeps_nothing_is_one_line_not_a_background_only_result(tmp_path, cat_png, chelsea,
                                                                             given, flags, fragment):
    """A run whose subject mask is empty (an all-black mask file, or one shrunk away) used to write
    a picture of the new background alone and report it done; now it is refused in one line, with no
    output, and history records the run as failed with the same line."""
    mask = np.zeros(chelsea.shape[:2], np.uint8)
    if given == "square":
        mask[100:140, 200:240] = 255
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    out = tmp_path / "out.png"
    proc = cli("replace", cat_png, "--out", out, "--mask", mask_path, "--background", "color:#00ff00",
               *flags, check=False)
    assert_one_line_error(proc, "nothing of the photo would be kept", fragment)
    assert not out.exists()
    [run] = json.loads(cli("history", "list", "--json").stdout)
    assert run["status"] == "failed" and fragment in run["error"]
