"""History page through AppTest: paging in SQL, search and filters, details, compare with the
differences highlighted, favourite, delete with confirmation, export, and "edit from here"."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import open_page, button, no_exception, wait_until  # noqa: E402

from ui import history as uh  # noqa: E402
from ui import state as S  # noqa: E402
from runs import record

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


def history_app() -> AppTest:
    return open_page("pages/history.py")



def texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


@pytest.fixture
def store(astronaut):
    """A history with 14 runs: prompts 'run 0' .. 'run 13', alternating models and backgrounds."""
    from core.history import open_store

    s = open_store()
    small = astronaut[::8, ::8].copy()                        # 64x64: fast to write
    mask = np.zeros(small.shape[:2], np.uint8)
    mask[16:48, 16:48] = 255
    for i in range(14):
        out = small.copy()
        out[mask == 0] = (i * 10) % 256
        sd = i % 2 == 0
        record(s, source=small, source_name=f"photo {i}.png", mask=mask,
                     outputs=[(out, 100 + i)], segmenter="tiny", clicks=[(32, 32, 1), (5, 5, 0)],
                     mask_options={"grow": i % 3, "feather": 0, "invert": False},
                     background="sd" if sd else "color:#00ff00",
                     prompt=f"run {i} beach" if sd else None, negative="blurry" if sd else None,
                     seed=100 + i if sd else None, steps=2 if sd else None,
                     guidance=7.5 if sd else None, model="tiny" if sd else None)
    return s


def test_empty_history_explains_what_to_do():
    at = history_app()
    assert at.title[0].value == "History"
    assert any("No runs yet" in i.value for i in at.info)


def blocks(at: AppTest) -> list:
    """Every container of the page, innermost last (a dialog is a block of type "dialog", drawn
    in the "event" root beside main and sidebar)."""
    out, todo = [], list(at._tree.children.values())
    while todo:
        node = todo.pop(0)
        kids = getattr(node, "children", None)
        if isinstance(kids, dict):
            out.append(node)
            todo.extend(kids.values())
    return out


def open_ids(at: AppTest) -> list[int]:
    return [int(b.key.split("-")[1]) for b in at.button if (b.key or "").startswith("open-")]


def summary(at: AppTest) -> str:
    return next(m.value for m in at.markdown if " selected" in m.value)


def test_grid_is_paged_in_sql(store):
    at = history_app()
    at.selectbox(key="hist_page_size").set_value(6).run()
    no_exception(at)
    all_ids = sorted((r.id for r in store.iter_runs()), reverse=True)      # newest first
    assert open_ids(at) == all_ids[:6]
    assert "Page 1 of 3" in [c.value for c in at.caption]
    assert "Colour #00ff00" in texts(at) and "run 12 beach" in texts(at)
    button(at, "Older →").click().run()
    no_exception(at)
    assert "Page 2 of 3" in [c.value for c in at.caption]
    assert open_ids(at) == all_ids[6:12]
    button(at, "Older →").click().run()
    assert "Page 3 of 3" in [c.value for c in at.caption]
    assert open_ids(at) == all_ids[12:]
    assert button(at, "Older →").disabled
    at.text_input(key="hist_search").input("beach").run()              # new filter: page 1 again
    assert "Page 1 of 2" in [c.value for c in at.caption]


def test_search_and_filters(store):
    at = history_app()
    at.text_input(key="hist_search").input("BEACH").run()
    no_exception(at)
    assert summary(at).startswith("**7** runs")
    at.text_input(key="hist_search").input("run 4").run()
    assert summary(at).startswith("**1** run ")
    at.text_input(key="hist_search").input("").run()
    at.selectbox(key="hist_kind").set_value("color").run()
    assert summary(at).startswith("**7** runs")
    at.selectbox(key="hist_kind").set_value(uh.ALL).run()
    at.selectbox(key="hist_model").set_value("tiny").run()
    assert summary(at).startswith("**7** runs")
    at.toggle(key="hist_favourites").set_value(True).run()
    assert summary(at).startswith("**0** runs")
    assert any("No runs match" in i.value for i in at.info)


def test_batch_filter_shows_only_that_batchs_runs(store, astronaut, monkeypatch, tiny_sam):
    """Runs of `python -m core batch` (each recorded with its batch) are picked by their batch's
    name, counted in the choices; the filter combines with search and favourites."""
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    small = astronaut[::8, ::8].copy()
    shots = [record(store, source=small, source_name=f"shots/{k}.png", batch="shots", background="sd",
                    prompt=f"shot {k} beach", model="tiny", clicks=[(5, 5, 1)], outputs=[(small, k)])
             for k in range(3)]
    record(store, source=small, source_name="<b>sale</b>/x.png", batch="<b>sale</b>", outputs=[small])
    at = history_app()
    box = at.selectbox(key="hist_batch")
    assert box.label == "Batch" and box.value == uh.ALL_RUNS
    assert box.options == ["All runs", "<b>sale</b> · 1 run", "shots · 3 runs"]   # plain text
    assert summary(at).startswith("**18** runs")
    box.set_value("shots").run()
    no_exception(at)
    assert summary(at).startswith("**3** runs")
    assert sorted(open_ids(at)) == shots
    assert at.expander[0].label == "Search and filters · batch shots"
    captions = [c.value.replace("\\", "") for c in at.caption]        # each card names its photo
    assert all(any(c.startswith(f"{k}.png · #{rid} ·") for c in captions) for k, rid in enumerate(shots))
    at.text_input(key="hist_search").input("shot 1").run()          # with search: both apply
    assert open_ids(at) == [shots[1]]
    at.text_input(key="hist_search").input("").run()
    at.toggle(key="hist_favourites").set_value(True).run()          # none of the batch's yet
    assert summary(at).startswith("**0** runs") and any("No runs match" in i.value for i in at.info)
    at.toggle(key="hist_favourites").set_value(False).run()
    at.selectbox(key="hist_batch").set_value("<b>sale</b>").run()
    assert summary(at).startswith("**1** run ")
    at.selectbox(key="hist_batch").set_value(uh.ALL_RUNS).run()
    assert summary(at).startswith("**18** runs")
    # a batch's photo opens in the Editor under its file name: a run made there is its own
    at.button(key=f"open-{shots[2]}").click().run()
    button(at, "Edit from here").click().run()
    no_exception(at)
    assert at.session_state["photo_name"] == "2.png"


def test_open_run_shows_source_mask_clicks_and_parameters(store):
    at = history_app()
    newest = store.list_runs(limit=1).runs[0]
    at.button(key=f"open-{newest.id}").click().run()
    no_exception(at)
    assert any(h.value.startswith(f"Run #{newest.id}") for h in at.subheader)
    captions = [c for img in at.image for c in img.captions]
    assert "Source" in captions and "Mask (white = subject)" in captions
    frames = [t.value for t in at.dataframe]
    params = next(f for f in frames if "Value" in f.columns)
    values = dict(zip(params.index, params["Value"]))
    assert values["Segmentation model"] == "tiny"
    assert values["Background"] == "Colour #00ff00"
    assert values["Photo"] == "photo 13.png (64×64)"            # its name, not its hash
    clicks = next(f for f in frames if "click" in f.columns)
    assert list(clicks["click"]) == ["add", "remove"]
    assert any(b.type == "dialog" and any(h.value.startswith("Run #") for h in b.get("subheader"))
               for b in blocks(at))                      # shown where the person is, not at the top
    button(at, "Close").click().run()
    assert not any(h.value.startswith("Run #") for h in at.subheader)
    assert not [b for b in blocks(at) if b.type == "dialog"]


def test_compare_highlights_differences(store):
    at = history_app()
    ids = [r.id for r in store.list_runs(limit=2).runs]
    for i in ids:
        at.checkbox(key=f"pick-{i}").check().run()
        no_exception(at)
    assert at.session_state["hist_selected"] == ids
    button(at, "Compare selected (2)").click().run()
    no_exception(at)
    df, differing = uh.comparison_table(store, ids)
    assert {"Seed", "Background", "Prompt"} <= set(differing)
    assert "Segmentation model" not in differing
    assert list(df.columns) == [f"Run #{i}" for i in ids]
    shown = at.dataframe[-1].value
    assert list(shown.columns) == [f"Run #{i}" for i in ids]
    assert any("Highlighted rows differ" in c.value for c in at.caption)
    styled = uh.styled_comparison(df, differing).to_html()
    assert "font-weight: 700" in styled


def test_favourite_then_export_favourites_zip(store):
    at = history_app()
    newest = store.list_runs(limit=1).runs[0]
    at.toggle(key=f"fav-{newest.id}").set_value(True).run()
    no_exception(at)
    assert store.get_run(newest.id).favorite
    assert at.toggle(key=f"fav-{newest.id}").value is True
    labels = [b.label for b in at.get("download_button")]
    assert "Export favourites (1) as zip" in labels
    data = uh.export_bytes(store, favorites=True)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        pngs = [n for n in names if n.endswith(".png") and not n.startswith("masks/")]
        assert len(pngs) == 1
        assert "manifest.json" in names
        manifest = json.loads(z.read("manifest.json"))
    rows = manifest.get("outputs") or manifest.get("runs") or []
    assert [r["run_id"] for r in rows] == [newest.id], manifest


def test_export_selected_zip(store):
    at = history_app()
    ids = [r.id for r in store.list_runs(limit=3).runs]
    for i in ids:
        at.checkbox(key=f"pick-{i}").check().run()
    assert "Export selected (3) as zip" in [b.label for b in at.get("download_button")]
    with zipfile.ZipFile(io.BytesIO(uh.export_bytes(store, ids))) as z:
        outs = [n for n in z.namelist() if n.endswith(".png") and not n.startswith("masks/")]
    assert len(outs) == 3


def test_delete_needs_confirmation(store):
    at = history_app()
    newest = store.list_runs(limit=1).runs[0]
    at.button(key=f"open-{newest.id}").click().run()
    button(at, "Delete").click().run()
    no_exception(at)
    assert any("cannot be undone" in w.value for w in at.warning)
    button(at, "Keep it").click().run()
    assert store.count_runs() == 14
    button(at, "Delete").click().run()
    button(at, "Yes, delete").click().run()
    no_exception(at)
    assert store.count_runs() == 13
    assert any(s.value == f"Deleted run #{newest.id}." for s in at.success)


def test_edit_from_here_loads_the_run_into_the_editor(store, monkeypatch, tiny_sam):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    at = history_app()
    run = store.list_runs(limit=1).runs[0]           # run 13: colour background
    sd_run = store.list_runs(limit=2).runs[1]        # run 12: SD
    at.button(key=f"open-{sd_run.id}").click().run()
    button(at, "Edit from here").click().run()
    no_exception(at)
    assert at.title[0].value == "Replace a photo's background"     # switched to the Editor
    ss = at.session_state
    assert ss["photo"].hash == sd_run.source.hash
    assert [(p["x"], p["y"], p["label"]) for p in ss["prompts"]] == [(32.0, 32.0, 1), (5.0, 5.0, 0)]
    assert ss["bg_kind"] == S.BG_SD and ss["prompt"] == "run 12 beach" and ss["seed"] == "112"
    assert at.text_area(key="prompt").value == "run 12 beach"
    assert ss["grow"] == 12 % 3
    assert any(s.value.startswith(f"Loaded run #{sd_run.id}") for s in at.success)

    at.switch_page("pages/history.py").run()
    at.button(key=f"open-{run.id}").click().run()
    button(at, "Edit from here").click().run()
    no_exception(at)
    assert at.session_state["bg_kind"] == S.BG_COLOR
    assert at.session_state["bg_color"].lower() == "#00ff00"


def test_a_cli_run_beyond_the_editors_widgets_loads_without_error(store, astronaut, monkeypatch, tiny_sam):
    """The CLI accepts what the spec allows (150 steps, guidance 0.5, 8 variants, a 40-bit seed);
    loading such a run into the Editor must not trip a widget's range."""
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    rid = record(store, source=astronaut[::8, ::8].copy(), background="sd", prompt="wide range",
                 steps=150, guidance=0.5, variants=8, seed=2**40, scheduler="ddim",
                 clicks=[(10, 10, 1)], outputs=[(astronaut[::8, ::8].copy(), 2**40)])
    at = history_app()
    at.button(key=f"open-{rid}").click().run()
    button(at, "Edit from here").click().run()
    no_exception(at)
    ss = at.session_state
    assert (ss["steps"], ss["guidance"], ss["seed"], ss["scheduler"]) == (150, 0.5, str(2**40), "ddim")
    assert ss["variants"] == 8                        # the editor offers the spec's range


def test_user_text_is_shown_as_text_not_markup(store, astronaut):
    nasty = "**bold** [link](http://evil.example) <script>alert(1)</script>"
    record(store, source=astronaut[::8, ::8].copy(), source_name="x.png", background="sd",
                     prompt=nasty, model="tiny", outputs=[(astronaut[::8, ::8].copy(), 1)])
    at = history_app()
    assert nasty in texts(at)                                # st.text: never markdown or HTML
    assert not any(nasty in m.value for m in at.markdown)


def test_rerun_from_history_generates_again(store, monkeypatch, tiny_sam, tiny_inpaint):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "tiny")
    at = history_app()
    sd_run = store.list_runs(limit=2).runs[1]
    at.button(key=f"open-{sd_run.id}").click().run()
    button(at, "Re-run").click().run()
    no_exception(at)
    assert at.title[0].value == "Replace a photo's background"
    assert at.session_state["job"] is not None                     # started on arrival
    at.switch_page("pages/editor.py")     # AppTest keeps rerunning the page it was on; a browser follows
    wait_until(at, lambda a: a.session_state["job"] is None and a.session_state["result"] is not None,
               what="the reopened run to finish")
    assert at.session_state["result"] is not None, at.session_state["job_notice"]
    assert store.count_runs() == 15
    newest = store.list_runs(limit=1).runs[0]
    assert newest.spec == sd_run.spec and newest.spec.generation.seed == 112
    assert newest.status == "succeeded"


def test_failed_run_card_is_marked_failed(store, astronaut):
    small = astronaut[::8, ::8].copy()
    rid = record(store, source=small, source_name="broken.png", background="sd", prompt="a failing scene",
                 status="failed", error="the inpainting model is not downloaded", outputs=[])
    at = history_app()
    no_exception(at)
    badges = [m.value for m in at.markdown if "badge[" in m.value]
    assert len(badges) == 1 and "Failed" in badges[0], badges      # only the failed card
    assert any("the inpainting model is not downloaded" in c.value for c in at.caption)
    assert any(img.captions == ["The photo — no result"] for img in at.image)
    at.button(key=f"open-{rid}").click().run()
    no_exception(at)
    assert any("Failed" in m.value for m in at.markdown if "badge[" in m.value)


def test_image_background_is_titled_by_its_file_name(store, astronaut, tmp_path):
    small = astronaut[::8, ::8].copy()
    named = record(store, source=small, background=f"image:{tmp_path}/backgrounds/ab12/beach day.png",
                   outputs=[(small, None)])
    hashed = record(store, source=small, background=f"image:{tmp_path}/backgrounds/{'0a' * 16}.png",
                    outputs=[(small, None)])
    at = history_app()
    shown = texts(at)
    assert "Image · beach day.png" in shown and "Image · uploaded photo" in shown
    assert not any(str(tmp_path) in t or "0a0a0a" in t for t in shown)
    assert uh.run_title(store.get_run(named)) == "Image · beach day.png"
    assert uh.run_title(store.get_run(hashed)) == "Image · uploaded photo"


def test_compare_has_human_labels_and_no_hashes_or_paths(store, astronaut, tmp_path):
    small = astronaut[::8, ::8].copy()
    rid = record(store, source=small, source_name="holiday.jpg", background=f"image:{tmp_path}/bg/sea.png",
                 clicks=[(10, 12, 1), (30, 31, 0)], box=(1, 2, 40, 50), outputs=[(small, 7)])
    other = store.list_runs(limit=2).runs[1].id
    at = history_app()
    for i in (rid, other):
        at.checkbox(key=f"pick-{i}").check().run()
    button(at, "Compare selected (2)").click().run()
    no_exception(at)
    assert [b for b in blocks(at) if b.type == "dialog"]
    shown = at.dataframe[-1].value
    cells = [str(v) for v in shown.to_numpy().ravel()] + [str(i) for i in shown.index]
    source_hash = store.get_run(rid).source.hash
    for cell in cells:
        assert source_hash[:12] not in cell and str(tmp_path) not in cell, cell
        assert not cell.startswith(("{", "[")) and "hash" not in cell.lower(), cell
    col = dict(zip(shown.index, shown[f"Run #{rid}"]))
    assert col["Photo"] == "holiday.jpg (64×64)"
    assert col["Background"] == "Image · sea.png"
    assert col["Clicks"] == "1 add, 1 remove: (10, 12) +, (30, 31) −"
    assert col["Box"] == "(1, 2) – (40, 50)"
    assert col["Output seeds"] == "7"


def test_folded_filters_say_which_are_on():
    """The filters are folded (a phone sees the runs first): the fold's label names what is on,
    the search words Markdown-escaped."""
    assert uh.filters_label({"hist_search": "", "hist_model": uh.ALL, "hist_kind": uh.ALL}) == "Search and filters"
    label = uh.filters_label({"hist_search": " *sunset*  beach ", "hist_favourites": True,
                              "hist_model": "tiny", "hist_kind": "color"})
    assert label == "Search and filters · “\\*sunset\\* beach” · ★ favourites only · model tiny · Colour"
    at = history_app()
    assert [e.label for e in at.expander] == ["Search and filters"]
