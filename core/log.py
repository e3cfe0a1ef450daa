"""Python logging for the app and the CLI, set up once: `configure()`.

Records go to stderr as `2026-01-31 12:00:00,123 WARNING ui.models: message`. Backdrop's own loggers
(`core.*`, `ui.*`, `pages.*`, `bench.*`, `backdrop.*`, and `__main__`, which is what a Streamlit
page or `python -m core` runs as) log at the chosen level; every other library only from WARNING
up (or the chosen level when that is higher), so a DEBUG run is not drowned in urllib3/PIL lines.

Level: the `level` argument, else env BACKDROP_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR, CRITICAL or
a number), else `default` (INFO: the app's server log says what it did; the CLI passes WARNING so
its stderr stays quiet). An unknown BACKDROP_LOG_LEVEL falls back to the default with a warning.

Logged text may hold user text (file names, prompts, exception messages): `SafeFormatter` writes
control characters as escapes (core.files.terminal_safe), so a log line cannot move the cursor,
recolour or clear a terminal, or forge a second log line; a traceback keeps its own line breaks.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import traceback
from typing import Optional, Union

from core.files import terminal_safe

ENV = "BACKDROP_LOG_LEVEL"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
APP_LOGGERS = ("core", "ui", "pages", "bench", "backdrop", "__main__")

_lock = threading.Lock()


class SafeFormatter(logging.Formatter):
    """A Formatter whose output has no raw control characters: the message line is escaped whole
    (a newline in it becomes `\\n`); a traceback keeps the line breaks of its frames, while each
    exception message in it is escaped whole, as the message is."""

    def format(self, record: logging.LogRecord) -> str:
        # another handler's formatter may have cached its own (unescaped) traceback text
        saved = record.exc_text
        record.exc_text = None if record.exc_info else (saved and _escape_lines(saved))
        try:
            return super().format(record)
        finally:
            record.exc_text = saved

    def formatMessage(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().formatMessage(record))

    def formatException(self, ei) -> str:
        out = []
        for chunk in traceback.TracebackException(*ei).format():
            if chunk.startswith("  File "):          # a frame: location and source lines
                out.append(_escape_lines(chunk))
            else:                                    # headers and `Type: message` (user text)
                body = chunk.strip("\n")
                lead, tail = chunk[:len(chunk) - len(chunk.lstrip("\n"))], chunk[len(chunk.rstrip("\n")):]
                out.append(lead + terminal_safe(body) + tail)
        return "".join(out).removesuffix("\n")

    def formatStack(self, stack_info: str) -> str:
        return _escape_lines(super().formatStack(stack_info))


def _escape_lines(text: str) -> str:
    return "\n".join(terminal_safe(line) for line in text.split("\n"))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (as logging's last resort does), so a test's
    captured stderr or a replaced stream gets the lines."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it; always use sys.stderr
        pass


def _level_from(value: Union[str, int, None]) -> Optional[int]:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text.upper())
    return level if isinstance(level, int) else None


def _ours() -> Optional[logging.Handler]:
    return next((h for h in logging.getLogger().handlers if getattr(h, "_backdrop", False)), None)


def configure(level: Union[str, int, None] = None, *, default: Union[str, int] = "INFO") -> int:
    """Set up logging: the first call adds one stderr handler to the root logger; every call
    (re)sets the levels. Returns the level Backdrop's loggers now use. Safe to call on every rerun
    of the Streamlit script and from several threads."""
    bad_env = None
    chosen = _level_from(level)
    if chosen is None:
        env = os.environ.get(ENV)
        chosen = _level_from(env)
        if chosen is None and env:
            bad_env = env
    if chosen is None:
        chosen = _level_from(default) or logging.INFO
    with _lock:
        root = logging.getLogger()
        if _ours() is None:
            handler = _StderrHandler()
            handler.setFormatter(SafeFormatter(FORMAT))
            handler._backdrop = True
            root.addHandler(handler)
        root.setLevel(max(logging.WARNING, chosen))
        for name in APP_LOGGERS:
            logging.getLogger(name).setLevel(chosen)
    if bad_env is not None:
        logging.getLogger(__name__).warning("%s=%r is not a log level; using %s", ENV, bad_env,
                                            logging.getLevelName(chosen))
    return chosen


@contextlib.contextmanager
def quiet_transformers():
    """transformers' "Loading weights" / "Writing model shards" bars off for the block (noise for a
    sub-second load), back on after if they were on. The switch is process-wide: a transformers
    load in another thread at the same moment loses its bar too, which is harmless."""
    from transformers.utils import logging as hf_logging
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()
