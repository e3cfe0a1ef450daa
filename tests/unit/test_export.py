"""Export zip: PNGs with an A1111 `parameters` chunk, masks, manifest.json/.csv, safe names, atomic write."""
from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.errors import HistoryError
from core.export import export_runs, export_zip, parameters_text, png_with_text, slug
from core.history import open_store
from core.spec import Background, RunSpec
from runs import record

SAFE = re.compile(r"^(outputs|masks)/[a-z0-9-]+\.png$")


@pytest.fixture
def store():
    return open_store()


def manifest(z: zipfile.ZipFile) -> tuple[list[dict], list[dict]]:
    rows_json = json.loads(z.read("manifest.json").decode("utf-8"))["outputs"]
    rows_csv = list(csv.DictReader(io.StringIO(z.read("manifest.csv").decode("utf-8-sig"))))
    return rows_json, rows_csv


def png(z: zipfile.ZipFile, name: str) -> Image.Image:
    im = Image.open(io.BytesIO(z.read(name)))
    im.load()
    return im


def test_export_chosen_runs(store, chelsea, tmp_path):
    mask = np.zeros(chelsea.shape[:2], np.uint8)
    mask[40:200, 90:300] = 255
    a = record(store, source=chelsea, mask=mask, background="sd", prompt="A beach at Sunset!",
                         negative="blurry, lowres", seed=123, steps=30, guidance=7.5,
                         scheduler="dpm++", model="sd15-inpainting", strength=1.0,
                         outputs=[(chelsea[::-1].copy(), 123), (chelsea[:, ::-1].copy(), 124)])
    rgba = np.dstack([chelsea, mask])
    b = record(store, source=chelsea, mask=mask, background="transparent", outputs=[rgba])
    record(store, source=chelsea, background="blur:5", outputs=[chelsea])   # not chosen
    out = tmp_path / "sub" / "export.zip"
    result = export_runs(out, [a, b], store=store)
    assert (result.path, result.runs, result.outputs, result.masks) == (out, 2, 3, 2)
    ra, rb = store.get_runs([a, b])
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert z.testzip() is None
        assert sorted(names) == sorted([
            f"masks/run-{a:06d}-mask.png", f"masks/run-{b:06d}-mask.png",
            f"outputs/run-{a:06d}-out-{ra.outputs[0].id:06d}-a-beach-at-sunset.png",
            f"outputs/run-{a:06d}-out-{ra.outputs[1].id:06d}-a-beach-at-sunset.png",
            f"outputs/run-{b:06d}-out-{rb.outputs[0].id:06d}-transparent.png",
            "manifest.json", "manifest.csv"])
        first = png(z, names[names.index(f"outputs/run-{a:06d}-out-{ra.outputs[0].id:06d}-a-beach-at-sunset.png")])
        assert first.text["parameters"] == (
            "A beach at Sunset!\nNegative prompt: blurry, lowres\n"
            "Steps: 30, Sampler: dpm++, CFG scale: 7.5, Seed: 123, Size: 451x300, "
            "Model: sd15-inpainting, Denoising strength: 1.0")
        assert np.array_equal(np.asarray(first), chelsea[::-1])
        second = png(z, f"outputs/run-{a:06d}-out-{ra.outputs[1].id:06d}-a-beach-at-sunset.png")
        assert "Seed: 124," in second.text["parameters"]
        cut = png(z, f"outputs/run-{b:06d}-out-{rb.outputs[0].id:06d}-transparent.png")
        assert cut.mode == "RGBA" and np.array_equal(np.asarray(cut), rgba)
        assert 'Background: "transparent"' not in cut.text["parameters"]
        assert cut.text["parameters"].endswith("Size: 451x300, Background: transparent")
        assert np.array_equal(np.asarray(png(z, f"masks/run-{a:06d}-mask.png")), mask)
        rows_json, rows_csv = manifest(z)
    assert len(rows_json) == len(rows_csv) == 3
    row = rows_json[0]
    assert row["run_id"] == a and row["output_id"] == ra.outputs[0].id
    assert (row["generation.prompt"], row["generation.negative"], row["seed"],
            row["generation.steps"], row["generation.guidance"]) == (
        "A beach at Sunset!", "blurry, lowres", 123, 30, 7.5)
    assert (row["generation.scheduler"], row["generation.model"], row["background"],
            row["favorite"]) == ("dpm++", "sd15-inpainting", "sd", False)
    assert RunSpec.from_json({"version": 1, **{part: {k.split(".", 1)[1]: v for k, v in row.items()
                                                      if k.startswith(part + ".")}
                                               for part in ("subject", "mask", "generation")},
                              "background": Background.parse(row["background"]).model_dump()}) \
        == ra.spec                                   # the manifest row holds the whole spec
    assert row["created"] == ra.created.isoformat() and row["file"] in names
    assert row["mask_file"] == f"masks/run-{a:06d}-mask.png"
    for rj, rc in zip(rows_json, rows_csv):
        assert rc["file"] == rj["file"] and rc["generation.prompt"] == (rj.get("generation.prompt") or "")
        assert int(rc["output_id"]) == rj["output_id"]
    assert [p.name for p in out.parent.iterdir()] == ["export.zip"]   # no temp file left


def test_export_favorites_and_selection_errors(store, coffee, tmp_path):
    a = record(store, source=coffee, background="blur:3", outputs=[coffee, coffee[::-1].copy()])
    b = record(store, source=coffee, background="color:#112233", outputs=[coffee[:, ::-1].copy()])
    out = tmp_path / "fav.zip"
    with pytest.raises(HistoryError, match="nothing to export"):
        export_runs(out, favorites=True, store=store)
    assert not out.exists()
    fav = store.get_run(a).outputs[1]
    store.set_favorite(fav.id)
    assert export_zip(store, out, favorites=True) == (out, 1)
    with zipfile.ZipFile(out) as z:
        rows, _ = manifest(z)
    assert [(r["run_id"], r["output_id"], r["favorite"]) for r in rows] == [(a, fav.id, True)]
    # ids + favourites: only favourite outputs of those runs
    with pytest.raises(HistoryError, match="nothing to export"):
        export_runs(out, [b], favorites=True, store=store)
    assert export_runs(out, [b, a], store=store).outputs == 3
    assert export_runs(tmp_path / "all.zip", store=store).outputs == 3   # neither: everything
    with pytest.raises(HistoryError, match="no run with id 999"):
        export_runs(out, [a, 999], store=store)


def test_failed_export_keeps_the_previous_zip(store, coffee, tmp_path):
    rid = record(store, source=coffee, background="blur:3", outputs=[coffee[::2, ::2].copy()])
    out = tmp_path / "x.zip"
    export_runs(out, [rid], store=store)
    before = out.read_bytes()
    store.get_run(rid).outputs[0].path.unlink()
    with pytest.raises(HistoryError, match="missing"):
        export_runs(out, [rid], store=store)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    with pytest.raises(HistoryError, match="cannot write"):
        export_runs(tmp_path / "x.zip" / "inside.zip", [rid], store=store)


HOSTILE = [
    "../../etc/passwd",
    "/absolute/path\\with\\backslashes",
    "<script>alert('x')</script> & \"quotes\"",
    "x" * 2000,
    "emoji 😀🎉 and ünïcödé, 東京の夕焼け",
    "nul\x00inside",
    "=HYPERLINK(\"http://evil\", \"click\")",
    "two\nlines\r\nand\ttabs",
    "",
    "CON",
    "..",
]


def test_hostile_prompts_are_stored_and_exported_safely(store, tmp_path):
    src = np.full((20, 30, 3), 90, np.uint8)
    ids = [record(store, source=src, background="sd", prompt=p, negative=p[::-1], seed=i,
                            outputs=[(np.full((20, 30, 3), i, np.uint8), i)])
           for i, p in enumerate(HOSTILE)]
    stored = [r.prompt for r in store.get_runs(ids)]
    assert stored == [p.replace("\x00", "") for p in HOSTILE]
    out = tmp_path / "hostile.zip"
    result = export_runs(out, ids, store=store)
    assert result.outputs == len(HOSTILE)
    with zipfile.ZipFile(out) as z:
        names = [n for n in z.namelist() if n.endswith(".png")]
        assert len(names) == len(set(names)) == len(HOSTILE)
        assert all(SAFE.match(n) and len(n) < 100 for n in names)
        rows_json, rows_csv = manifest(z)
        for row, prompt in zip(rows_json, stored):
            assert row["generation.prompt"] == prompt
            text = png(z, row["file"]).text["parameters"]
            assert "\x00" not in text and f"Seed: {row['seed']}, Size: 30x20," in text
            if prompt and "\n" not in prompt and "\r" not in prompt:
                assert text.startswith(prompt)
        assert [r["generation.prompt"] for r in rows_csv] == [
            "'" + p if p[:1] == "=" else p for p in stored]   # formulas defused in CSV only
        z.extractall(tmp_path / "unzipped")
    inside = {p.relative_to(tmp_path / "unzipped").as_posix()
              for p in (tmp_path / "unzipped").rglob("*") if p.is_file()}
    assert inside == set(names) | {"manifest.json", "manifest.csv"}


def test_slug_and_parameters_helpers():
    assert slug("A Beach at Sunset!") == "a-beach-at-sunset"
    assert slug("../../etc/passwd") == "etc-passwd"
    assert slug("Ünïcödé café") == "unicode-cafe"
    assert slug("東京") == "" and slug(None) == ""
    assert len(slug("word " * 100)) <= 40 and not slug("word " * 100).endswith("-")
    raw = io.BytesIO()
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(raw, format="PNG")
    latin = Image.open(io.BytesIO(png_with_text(raw.getvalue(), "parameters", "café")))
    utf8 = Image.open(io.BytesIO(png_with_text(raw.getvalue(), "parameters", "東京 😀")))
    assert latin.text["parameters"] == "café" and utf8.text["parameters"] == "東京 😀"
    with pytest.raises(HistoryError):
        png_with_text(b"not a png", "parameters", "x")

    class R:   # a colour run: no SD parameters, the background is named instead
        spec = RunSpec(background="color:#00ff00")

    class O:
        seed, width, height = None, 8, 6

    assert parameters_text(R, O) == '\nSize: 8x6, Background: "color:#00ff00"'
