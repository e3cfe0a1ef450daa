"""core.log: configured once (one handler however often it is called), the level from
BACKDROP_LOG_LEVEL, and no raw control character from a logged message reaches the terminal."""
from __future__ import annotations

import logging

import pytest

from core import log


@pytest.fixture
def fresh_logging():
    """Remove our handler and restore levels afterwards, so tests do not leak configuration."""
    root = logging.getLogger()
    saved = root.level, {n: logging.getLogger(n).level for n in log.APP_LOGGERS}
    yield
    for h in [h for h in root.handlers if getattr(h, "_backdrop", False)]:
        root.removeHandler(h)
    root.setLevel(saved[0])
    for name, level in saved[1].items():
        logging.getLogger(name).setLevel(level)


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_backdrop", False)]


def test_configure_is_idempotent(fresh_logging, monkeypatch):
    monkeypatch.delenv(log.ENV, raising=False)
    assert log.configure() == logging.INFO
    assert log.configure() == logging.INFO
    assert len(ours()) == 1
    assert logging.getLogger("core.weights").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("urllib3").getEffectiveLevel() == logging.WARNING   # not ours: quieter
    assert log.configure(default="WARNING") == logging.WARNING                    # what the CLI uses
    assert len(ours()) == 1


def test_level_from_env_and_argument(fresh_logging, monkeypatch, capsys):
    monkeypatch.setenv(log.ENV, "debug")
    assert log.configure() == logging.DEBUG
    logging.getLogger("ui.models").debug("visible at debug")
    monkeypatch.setenv(log.ENV, "ERROR")
    assert log.configure() == logging.ERROR
    logging.getLogger("ui.models").warning("hidden at error")
    assert log.configure("INFO") == logging.INFO                                  # argument wins
    monkeypatch.setenv(log.ENV, "loud")
    assert log.configure() == logging.INFO
    err = capsys.readouterr().err
    assert "DEBUG ui.models: visible at debug" in err and "hidden at error" not in err
    assert "BACKDROP_LOG_LEVEL='loud' is not a log level; using INFO" in err


def test_escapes_control_characters(fresh_logging, monkeypatch, capsys):
    monkeypatch.delenv(log.ENV, raising=False)
    log.configure()
    name = "evil\x1b[2J\x1b]0;title\x07\nFAKE core: forged line.png"
    logging.getLogger("core.images").warning("cannot read %s", name)
    try:
        raise ValueError(f"bad file {name}")
    except ValueError:
        logging.getLogger("ui.models").warning("caught", exc_info=True)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert "cannot read evil\\x1b[2J\\x1b]0;title\\x07\\nFAKE core: forged line.png" in err
    lines = err.splitlines()
    assert not any(line.startswith("FAKE") for line in lines)          # no forged log line
    assert any(line.startswith("Traceback") for line in lines)         # a traceback keeps its lines
    assert "ValueError: bad file evil\\x1b[2J\\x1b]0;title\\x07\\nFAKE core: forged line.png" in lines
    assert " WARNING core.images: " in lines[0]


def test_other_libraries_log_one_level_above_ours(fresh_logging, monkeypatch, capsys):
    """The CLI's WARNING keeps other libraries' warnings, Python warnings and transformers' own
    handler off stderr (its one `error:` line); the app's INFO shows them, escaped, as our log
    lines. A library that gave its logger a level of its own (huggingface_hub: WARNING) is held
    to the rule too."""
    import warnings

    from transformers.utils import logging as hf_logging

    monkeypatch.delenv(log.ENV, raising=False)
    lib = logging.getLogger("some_library")
    saved = lib.level
    lib.setLevel(logging.WARNING)
    logging.captureWarnings(False)          # as a fresh process has it, whatever ran before here
    try:
        assert log.configure(default="WARNING") == logging.WARNING
        assert log.library_level(logging.WARNING) == logging.ERROR
        lib.warning("library warning, hidden")
        lib.error("library error, shown")
        hf_logging.get_logger("transformers.modeling_utils").warning("transformers warning, hidden")
        warnings.warn("python warning, hidden", UserWarning)
        logging.getLogger("core.images").warning("our warning, shown")
        assert not hf_logging.is_progress_bar_enabled()
        assert log.configure("INFO") == logging.INFO
        lib.warning("library warning\x1b[2J, shown")
        hf_logging.get_logger("transformers.modeling_utils").warning("transformers warning, shown")
        warnings.warn("python warning\nFAKE line, shown", FutureWarning)
    finally:
        logging.captureWarnings(False)
        lib.setLevel(saved)
    err = capsys.readouterr().err
    assert "hidden" not in err
    lines = err.splitlines()
    assert [line.split(" ", 2)[2] for line in lines[:3]] == [
        "ERROR some_library: library error, shown", "WARNING core.images: our warning, shown",
        "WARNING some_library: library warning\\x1b[2J, shown"]
    assert " WARNING transformers.modeling_utils: transformers warning, shown" in lines[3]
    assert " WARNING py.warnings: " in lines[4] and "FutureWarning: python warning\\nFAKE line" in lines[4]
    assert len(lines) == 5 and "\x1b" not in err


def test_no_password_reaches_the_log(fresh_logging, monkeypatch, capsys):
    """A URL's password (user:PASSWORD@, password=...) and the configured URLs' passwords are masked
    in every log line, message and traceback alike: e.g. the app's warning that it cannot make a
    client for BACKDROP_SERVER_URL (here: a token it refuses), which named the URL as set."""
    monkeypatch.delenv(log.ENV, raising=False)
    monkeypatch.setenv("BACKDROP_SERVER_URL", "http://alice:hunter2@127.0.0.1:9")
    monkeypatch.setenv("BACKDROP_API_TOKEN", "tök")
    log.configure()
    from core.engine import get_engine
    from ui import prompts
    assert prompts.load_segmenter(get_engine(), {}, "tiny")[1] is None
    try:
        raise ValueError("could not connect to postgresql://bob:Sw0rdfish@db/h?sslpassword=Sekrit9")
    except ValueError:
        logging.getLogger("core.history").warning("open failed", exc_info=True)
    err = capsys.readouterr().err
    assert "no client for the Backdrop service at http://alice:***@127.0.0.1:9" in err
    assert "postgresql://bob:***@db/h" in err
    assert not any(s in err for s in ("hunter2", "Sw0rdfish", "Sekrit9")), err
