"""The run spec (core/spec.py): one place that validates a run's parameters with one-line errors,
round-trips through JSON, and the migration that moved the history's rows to it."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from core.errors import InvalidOptionError
from core.spec import (SCHEMA_VERSION, Background, Click, Generation, MaskOptions, RunSpec, Subject,
                       a1111_parameters, flat_keys)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "history-0003"


def sd_spec(**gen) -> RunSpec:
    return RunSpec(subject=Subject(clicks=[Click(10, 20), Click(5, 6, 0)], segmenter="tiny"),
                   background="sd", generation=Generation(prompt="a beach", model="tiny", **gen))


@pytest.mark.parametrize("model, values, words", [
    (Generation, dict(prompt="p", steps=0), "steps must be from 1 to 150, got 0"),
    (Generation, dict(prompt="p", steps=151), "steps must be from 1 to 150"),
    (Generation, dict(prompt="p", steps=True), "steps must be a whole number"),
    (Generation, dict(prompt="p", steps=2.5), "steps must be a whole number"),
    (Generation, dict(prompt="p", guidance=float("nan")), "guidance must be a finite number"),
    (Generation, dict(prompt="p", guidance=31), "guidance must be from 0 to 30"),
    (Generation, dict(prompt="p", strength=0), "strength must be more than 0 and at most 1"),
    (Generation, dict(prompt="p", seed=-1), "seed must be from 0 to"),
    (Generation, dict(prompt="p", variants=9), "variants must be from 1 to 8"),
    (Generation, dict(prompt="p", scheduler="warp"), "unknown scheduler 'warp'"),
    (Generation, dict(prompt="p", steps=3, strength=0.2), "steps x strength must be at least 1"),
    (Generation, dict(prompt="x" * 2001), "prompt too long: at most 2000 characters"),
    (Generation, dict(prompt=5), "prompt must be text"),
    (Generation, dict(prompt="p", sharpness=3), "unknown option 'sharpness'"),
    (Generation, dict(), "prompt is required"),
    (MaskOptions, dict(grow=1.5), "grow must be a whole number"),
    (MaskOptions, dict(grow=10_001), "grow must be from -10000 to 10000"),
    (MaskOptions, dict(feather=-1), "feather must be from 0 to 256"),
    (MaskOptions, dict(fill_holes=1), "fill_holes must be true or false"),
    (Subject, dict(box=(5, 5, 1, 1)), "box (5.0, 5.0, 1.0, 1.0) is empty"),
    (Subject, dict(candidate=3), "candidate must be from 0 to 2"),
    (Click, dict(x=1, y=2, label=2), "click label must be 1 (subject) or 0 (not subject)"),
    (Click, dict(x=float("inf"), y=2), "x must be a finite number"),
])
def test_bad_values_are_refused_with_one_line_naming_the_field(model, values, words):
    with pytest.raises(InvalidOptionError) as e:
        model(**values)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_numpy_scalars_are_numbers_and_values_keep_their_types():
    g = Generation(prompt="p", steps=np.int64(12), guidance=np.float32(3.5), seed=np.uint32(7))
    assert (g.steps, g.guidance, g.seed) == (12, 3.5, 7)
    assert type(g.steps) is int and type(g.guidance) is float
    assert Click(np.float64(1.5), 2).x == 1.5


def test_backgrounds_parse_and_print_back():
    for text in ("sd", "transparent", "color:#1e90ff", "blur:12.5", "image:/tmp/b.png"):
        assert str(Background.parse(text)) == text
    assert Background.parse("colour:white").color == (255, 255, 255)
    assert Background.parse("blur").radius == 20
    for bad, words in (("blur:0", "blur radius must be above 0"), ("sd:x", "takes no value"),
                       ("image:", "needs a path"), ("plasma", "unknown background"),
                       ("color:#12", "bad colour")):
        with pytest.raises(InvalidOptionError, match=words):
            Background.parse(bad)
    with pytest.raises(InvalidOptionError, match="takes no radius"):
        Background("color", color=(1, 2, 3), radius=4)


def test_a_run_spec_needs_a_prompt_exactly_when_the_background_is_painted():
    with pytest.raises(InvalidOptionError, match="needs a prompt"):
        RunSpec(background="sd")
    with pytest.raises(InvalidOptionError, match="only used with the sd background"):
        RunSpec(background="blur:3", generation=Generation(prompt="p"))


def test_json_round_trip_and_version():
    spec = sd_spec(seed=9, scheduler="euler")
    data = spec.to_json()
    assert data["version"] == SCHEMA_VERSION
    assert RunSpec.from_json(data) == spec
    assert RunSpec.from_json(__import__("json").dumps(data)) == spec
    with pytest.raises(InvalidOptionError, match="version"):
        RunSpec.from_json(data | {"version": 99})


def test_replace_validates_again_and_diff_names_what_changed():
    a = sd_spec()
    b = a.replace(mask={"grow": 4}, generation=a.generation.model_dump() | {"steps": 12})
    assert b.mask.grow == 4 and b.generation.steps == 12
    assert a.diff(b) == {"mask.grow": (0, 4), "generation.steps": (30, 12)}
    assert a.diff(a) == {}
    with pytest.raises(InvalidOptionError, match="grow must be a whole number"):
        a.replace(mask={"grow": "x"})
    assert set(b.flat()) <= set(flat_keys())


def test_a1111_text():
    spec = sd_spec(seed=5, steps=20, guidance=6.0, negative="blurry, dark")
    assert a1111_parameters(spec, 7, (640, 480)) == (
        "a beach\nNegative prompt: blurry, dark\nSteps: 20, Sampler: default, CFG scale: 6.0, "
        "Seed: 7, Size: 640x480, Model: tiny, Denoising strength: 1.0")
    colour = RunSpec(background="color:#00ff00")
    assert a1111_parameters(colour, None, (8, 6)) == '\nSize: 8x6, Background: "color:#00ff00"'


# ------------------------------------------------------------------------ migration 0003 -> 0004
EXPECTED = {   # what tests/fixtures/history-0003/make.py recorded with the code of revision 0003
    1: dict(background="sd", clicks=[(10.5, 12.0, 1), (3.0, 4.0, 0)], box=(1.0, 2.0, 30.0, 22.0),
            candidate=1, segmenter="sam-vit-b",
            mask=dict(grow=3, feather=2, fill_holes=True, min_area=5, invert=False),
            generation=dict(prompt="a sunny Beach, golden hour", negative="blurry", seed=42, steps=25,
                            guidance=6.5, strength=0.9, scheduler="euler_a", model="sd15-inpainting",
                            variants=2, mode="quality", lora=None),
            outputs=[(42, False), (43, True)], status="succeeded"),
    2: dict(background="color:#1e90ff", clicks=[(5.0, 5.0, 1)], segmenter="tiny", outputs=[(None, False)]),
    3: dict(background="transparent", clicks=[], segmenter=None, mask=dict(invert=True),
            outputs=[(None, False)]),
    4: dict(background="sd", segmenter="grabcut", status="failed", outputs=[],
            generation=dict(prompt="neon city", negative="", seed=None, steps=4, guidance=1.0,
                            strength=1.0, scheduler=None, model="tiny", variants=1,
                            mode="quality", lora=None)),
    5: dict(background="blur:12.5", candidate=0, segmenter="sam2-tiny", mask=dict(grow=-2)),
    6: dict(background="image:/home/u/Pictures/beach.jpg", segmenter="sam-vit-h", status="cancelled"),
}


@pytest.fixture
def old_history(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("make.py"))
    with sqlite3.connect(folder / "history.db") as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("0003",)
        before = {r[0]: r for r in con.execute("SELECT id, status, timings, error, source_id, mask_id "
                                                "FROM runs")}
    monkeypatch.setenv("BACKDROP_DATA_DIR", str(folder))
    monkeypatch.setenv("BACKDROP_DATABASE_URL", f"sqlite:///{folder}/history.db")
    return folder, before


def test_migration_moves_every_run_of_a_0003_database_into_its_spec(old_history):
    from core.history import RunQuery
    from core.history import db
    from core.history.store import HistoryStore

    folder, before = old_history
    store = HistoryStore()
    runs = {r.id: r for r in store.iter_runs()}
    assert set(runs) == set(EXPECTED)
    for rid, want in EXPECTED.items():
        run, spec = runs[rid], runs[rid].spec
        assert str(spec.background) == want["background"], rid
        assert spec.subject.segmenter == want["segmenter"], rid
        if "clicks" in want:
            assert [(c.x, c.y, c.label) for c in spec.subject.clicks] == want["clicks"], rid
        assert spec.subject.box == want.get("box"), rid
        assert spec.subject.candidate == want.get("candidate"), rid
        # runs made before edge matting existed had hard edges
        mask = dict(grow=0, feather=0, fill_holes=False, min_area=0, invert=False, edge="hard",
                    edge_band=None) | want.get("mask", {})
        assert spec.mask.model_dump() == mask, rid
        if "generation" in want:
            assert spec.generation.model_dump() == want["generation"], rid
        else:
            assert spec.generation is None, rid
        if "outputs" in want:
            assert [(o.seed, o.favorite) for o in run.outputs] == want["outputs"], rid
        assert run.status == want.get("status", "succeeded") == before[rid][1]
        assert run.error == before[rid][3]
        assert (run.mask is not None) == (before[rid][5] is not None)
        for o in run.outputs:
            assert o.path.is_file() and o.thumb_path.is_file()
    assert runs[1].timings == {"mask": 0.1, "diffusion": 9.5}
    # the derived columns still drive search and filters
    assert [r.id for r in store.list_runs(RunQuery(text="BEACH"))] == [1]
    assert [r.id for r in store.list_runs(RunQuery(model="tiny"))] == [4]
    assert [r.id for r in store.list_runs(RunQuery(background_kind="blur"))] == [5]
    assert [r.id for r in store.list_runs(RunQuery(favorites=True))] == [1]
    with sqlite3.connect(folder / "history.db") as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == (db.head_revision(),)
        cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
        assert "spec" in cols and not cols & {"prompt", "steps", "clicks", "mask_options"}
        assert con.execute("SELECT count(*) FROM outputs").fetchone() == (6,)


def test_migration_downgrades_back_to_the_old_columns(old_history):
    from core.history import db

    folder, _ = old_history
    engine = db.get_engine(f"sqlite:///{folder}/history.db")
    db.upgrade(engine)
    with sqlite3.connect(folder / "history.db") as con:
        con.row_factory = sqlite3.Row
        spec_rows = {r["id"]: r["spec"] for r in con.execute("SELECT id, spec FROM runs")}
    from alembic import command
    cfg = db.alembic_config()
    with db.write_engine(engine).connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    with sqlite3.connect(folder / "history.db") as con:
        con.row_factory = sqlite3.Row
        row = dict(con.execute("SELECT * FROM runs WHERE id = 1").fetchone())
        assert row["prompt"] == "a sunny Beach, golden hour" and row["steps"] == 25
        assert row["background"] == "sd" and row["scheduler"] == "euler_a"
        assert con.execute("SELECT background FROM runs WHERE id = 2").fetchone()[0] == "color:#1e90ff"
    db.upgrade(engine)
    with sqlite3.connect(folder / "history.db") as con:
        again = {r[0]: r[1] for r in con.execute("SELECT id, spec FROM runs")}
    import json
    assert {k: json.loads(v) for k, v in again.items()} == {k: json.loads(v) for k, v in spec_rows.items()}


def test_every_spec_field_reaches_the_cli_the_editor_state_and_the_manifest():
    """What makes 'a new parameter = a spec field + its widget' true: the CLI flags, the editor's
    state defaults and the export columns are all derived from the spec's fields."""
    from core.cli import build_parser
    from core.export import MANIFEST_COLUMNS
    from ui import state as S

    replace = build_parser()._subparsers._group_actions[0].choices["replace"]
    flags = {o for a in replace._actions for o in a.option_strings}
    defaults = S.spec_defaults()
    for part, model in (("mask", MaskOptions), ("generation", Generation)):
        for name in model.model_fields:
            assert "--" + name.replace("_", "-") in flags, name
            assert S.STATE_KEYS.get(f"{part}.{name}", name) in defaults, name
            assert f"{part}.{name}" in MANIFEST_COLUMNS, name
    state: dict = {}
    S.init_session(state)
    state.update(prompts=[{"kind": "point", "x": 4.0, "y": 5.0, "label": 1}], bg_kind=S.BG_SD,
                 prompt="dunes", grow=3, fill_holes=True, steps=12, seed=9, scheduler="euler")
    spec = S.spec_from_state(state, "grabcut")
    again: dict = {}
    S.init_session(again)
    S.spec_to_state(again, spec)          # "edit from here" restores what made the run
    assert S.spec_from_state(again, "grabcut") == spec
    assert (spec.mask.grow, spec.mask.fill_holes, spec.generation.steps, spec.generation.seed,
            spec.generation.scheduler) == (3, True, 12, 9, "euler")
