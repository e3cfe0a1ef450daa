"""The work survives a reload (ui.saved), through AppTest: a page's session id in its URL, its
photo, clicks, prompt and settings read back by a new session opened with that id; damaged saved
work is a fresh start with one line; a generation still running comes back with its progress and
Cancel, and History shows a running run's progress and cancels it. GrabCut segments (no weights)."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import no_exception  # noqa: E402

from core import config  # noqa: E402
from core.errors import CancelledError  # noqa: E402
from ui import prompts, saved, tasks  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


@pytest.fixture(autouse=True)
def grabcut(monkeypatch):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "grabcut")


def app(session: str | None = None) -> AppTest:
    """A new browser page on the app; `session`: the id in its URL (a reload of that page)."""
    at = AppTest.from_file(APP, default_timeout=120)
    if session is not None:
        at.query_params[saved.PARAM] = session
    at.run()
    no_exception(at)
    return at


def click(at: AppTest, x: float, y: float) -> None:
    """A click on the photo at (x, y) in its own pixels, as the click component's handler makes it
    (it runs in the photo's fragment: no whole-page run follows)."""
    prompts.add_click(at.session_state, x, y, 1)


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def edited_page() -> AppTest:
    """The Cat loaded, two clicks, a prompt and a feather: a page with work on it."""
    at = app()
    at.button(key="sample-Cat").click().run()
    click(at, 220, 150)
    at.run()
    click(at, 20, 280)              # a second click, saved without a whole-page run
    kept = json.loads(saved.session_file(at.session_state[saved.ID_KEY]).read_text())
    assert len(kept["prompts"]) == 2     # a click reruns only the photo's fragment: kept at once
    at.text_area(key="prompt").input("a quiet harbour at dawn").run()
    at.slider(key="feather").set_value(9).run()
    no_exception(at)
    return at


def test_a_reload_brings_back_photo_clicks_prompt_and_settings():
    at = edited_page()
    session = at.session_state[saved.ID_KEY]
    assert saved.valid_id(session) and at.query_params[saved.PARAM] == session   # in the URL
    photo, prompts = at.session_state["photo"], at.session_state["prompts"]
    assert len(prompts) == 2

    again = app(session)
    assert again.session_state["photo"].hash == photo.hash
    assert again.session_state["photo_name"] == "chelsea.png"
    assert again.session_state["prompts"] == prompts
    assert again.text_area(key="prompt").value == "a quiet harbour at dawn"
    assert again.slider(key="feather").value == 9
    assert "Mask ready" in captions(again) and "(2 add, 0 remove)" in captions(again)
    assert again.query_params[saved.PARAM] == session
    assert not again.warning or all("brought back" not in w.value for w in again.warning)

    other = app()                              # another page: its own id, nothing of the first
    assert other.session_state[saved.ID_KEY] != session
    assert other.session_state["photo"] is None


def found_and_refined() -> AppTest:
    """The studio shot uploaded, "Find the subject" (both objects), one remove click on the blue
    object: the product alone is selected."""
    from apptest_kit import button
    from photos import png, studio_shot

    at = app()
    at.session_state["bg_kind"] = "Colour"
    at.file_uploader(key="upload").set_value(("shot.png", png(studio_shot()[0]), "image/png")).run()
    button(at, "Find the subject").click().run()
    no_exception(at)
    prompts.add_click(at.session_state, 650, 360, 0)       # remove: on the blue object
    at.run()
    no_exception(at)
    return at


def shown_mask(at: AppTest):
    """The mask the photo shows (the refined subject, at the preview size)."""
    (result,) = at.session_state["seg_cache"].values()
    return result.masks[result.best]


def test_a_reload_brings_back_the_subject_found_and_its_refining_click():
    import numpy as np

    at = found_and_refined()
    session = at.session_state[saved.ID_KEY]
    found, mask = at.session_state["auto"]["mask"], shown_mask(at)
    assert "(found, 0 add, 1 remove)" in captions(at)

    again = app(session)
    assert again.session_state["prompts"] == at.session_state["prompts"]
    assert np.array_equal(again.session_state["auto"]["mask"], found)       # the same mask, kept
    assert np.array_equal(shown_mask(again), mask)                          # refined again the same
    assert "(found, 0 add, 1 remove)" in captions(again)
    from ui import state as S
    assert S.spec_from_state(again.session_state).subject.auto             # Generate finds it again

    # what comes back is the kept mask itself, not a new search: another mask kept in its place
    from core.images import encode_png
    from ui import auto
    other = np.zeros_like(found)
    other[10:60, 10:90] = 255
    file = saved.session_file(session)
    work = json.loads(file.read_text())
    work["auto"]["mask"] = auto.digest(other)
    saved.mask_file(auto.digest(other)).write_bytes(encode_png(other))
    file.write_text(json.dumps(work))
    assert np.array_equal(app(session).session_state["auto"]["mask"], other)
    work["auto"]["mask"] = auto.digest(found)
    file.write_text(json.dumps(work))

    # the kept mask is gone: the subject is found again, the click still refines it
    saved.mask_file(at.session_state["auto"]["digest"]).unlink()
    again = app(session)
    assert np.array_equal(again.session_state["auto"]["mask"], found)
    assert np.array_equal(shown_mask(again), mask)
    assert not again.warning or all("brought back" not in w.value for w in again.warning)


def test_damaged_or_missing_saved_work_is_a_fresh_start_with_one_line():
    at = edited_page()
    session = at.session_state[saved.ID_KEY]
    file = saved.session_file(session)
    text = file.read_text()

    file.write_text(text[: len(text) // 2])                # cut off half-way
    again = app(session)
    assert again.session_state["photo"] is None
    assert any("could not be brought back (its file is damaged)" in e.value for e in again.warning)

    file.write_text(text)
    saved.photo_file(at.session_state["photo"].hash).unlink()  # the photo is gone
    again = app(session)
    assert again.session_state["photo"] is None and again.session_state["prompts"] == []
    assert any("the photo is no longer kept" in e.value for e in again.warning)
    assert again.session_state["prompt"] == "a quiet harbour at dawn"     # the settings came back


def test_a_url_id_that_is_not_one_is_never_a_path(tmp_path):
    target = tmp_path / "data" / "x.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"version": 1}))
    for bad in ("../x", "..%2Fx", "A" * 32, "0" * 31, "0" * 33, "x.json"):
        at = app(bad)
        assert at.session_state[saved.ID_KEY] != bad and saved.valid_id(at.session_state[saved.ID_KEY])
        assert at.query_params[saved.PARAM] == at.session_state[saved.ID_KEY]
    assert target.read_text() == json.dumps({"version": 1})


def waiting_generation(store, photo) -> tasks.Task:
    """A generation as the Editor starts it, recorded in History as running, that goes on until
    it is cancelled (a real run's length cannot be counted on in a test)."""
    from core.spec import Background, RunSpec, Subject

    spec = RunSpec(subject=Subject(clicks=((220, 150, 1),)), background=Background.parse("color:#00FF00"))
    task = tasks.Task(kind="generate", label="generating the background")
    task.run_id = store.start_run(source=photo, spec=spec, source_name="chelsea.png")
    task.run_history = config.database_url()
    going = threading.Event()

    def work(progress, cancel):
        progress("diffusion", 0.4)
        going.set()
        while not cancel.wait(0.05):
            pass
        store.fail_run(task.run_id, "cancelled", status="cancelled")
        raise CancelledError("cancelled while painting")

    tasks.submit(task, work)
    assert going.wait(30)
    return task


def test_a_running_generation_comes_back_after_a_reload_and_history_cancels_it():
    from core.history import open_store

    at = edited_page()
    session = at.session_state[saved.ID_KEY]
    store = open_store()
    task = waiting_generation(store, at.session_state["photo"])
    tasks.keep(session, task)          # what job.start_generation does
    try:
        # run ids are per database: the same number in another history is another run
        assert tasks.find_run(task.run_id, "sqlite:////elsewhere/history.db") is None
        again = app(session)           # the reload: the run's progress and Cancel are back
        bars = [p for p in again.get("progress")]
        assert bars and "Painting the background… 40%" in bars[0].proto.text
        assert [b for b in again.button if b.key == "cancel"]

        again.switch_page("pages/history.py").run()     # History: the running card, with Cancel
        no_exception(again)
        bars = [p for p in again.get("progress")]
        assert bars and "40%" in bars[0].proto.text
        again.button(key=f"cancel-run-{task.run_id}").click().run()
        assert task.wait(30) and task.cancelled
        assert store.get_run(task.run_id).status == "cancelled"
    finally:
        task.cancel.set()


def test_old_saved_work_is_deleted_and_nothing_else(tmp_path):
    folder = saved.folder()
    (folder / "photos").mkdir(parents=True)
    (folder / "masks").mkdir()
    old_session, new_session = folder / ("a" * 32 + ".json"), folder / ("b" * 32 + ".json")
    old_photo, old_mask = folder / "photos" / ("c" * 64 + ".png"), folder / "masks" / ("f" * 64 + ".png")
    others = [folder / "notes.json", folder / ("d" * 32 + ".json.bak"), folder / "photos" / "x.png"]
    for f in [old_session, new_session, old_photo, old_mask, *others]:
        f.write_text("{}")
    (folder / ("e" * 32 + ".json")).mkdir()               # a folder with a session's name
    week_ago = time.time() - 8 * 86400
    for f in [old_session, old_photo, old_mask, *others]:
        os.utime(f, (week_ago, week_ago))
    assert saved.prune() == 3
    assert not old_session.exists() and not old_photo.exists() and not old_mask.exists()
    assert new_session.exists() and all(f.exists() for f in others)
    assert (folder / ("e" * 32 + ".json")).is_dir()


def test_saved_values_the_page_cannot_show_are_left_at_their_defaults():
    at = edited_page()
    session = at.session_state[saved.ID_KEY]
    file = saved.session_file(session)
    work = json.loads(file.read_text())
    work["settings"].update(bg_kind="Nonsense", edge="wobbly", feather="nine", grow=3)
    work["prompts"].append({"kind": "point", "x": 10_000, "y": 5, "label": 1})   # off the photo
    file.write_text(json.dumps(work))
    again = app(session)
    assert again.session_state["bg_kind"] == at.session_state["bg_kind"] != "Nonsense"
    assert again.session_state["edge"] == "hard" and again.session_state["feather"] == 0
    assert again.session_state["grow"] == 3
    assert again.session_state["photo"] is None          # clicks that do not fit: a fresh start
    assert any("could not be brought back" in w.value for w in again.warning)
