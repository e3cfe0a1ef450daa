"""Python logging for the app and the CLI, set up once: `configure()`.

Records go to stderr as `2026-01-31 12:00:00,123 WARNING ui.models: message`. Backdrop's own loggers
(`core.*`, `ui.*`, `pages.*`, `bench.*`, `backdrop.*`, and `__main__`, which is what a Streamlit
page or `python -m core` runs as) log at the chosen level; every other library only from WARNING
up (or the chosen level when that is higher), so a DEBUG run is not drowned in urllib3/PIL lines.

Level: the `level` argument, else env BACKDROP_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR, CRITICAL or
a number), else `default` (INFO: the app's server log says what it did; the CLI passes WARNING so
its stderr stays quiet). An unknown BACKDROP_LOG_LEVEL falls back to the default with a warning.

Other libraries log one level above Backdrop's own and never below WARNING (`library_level`): the
app's INFO shows their warnings, the CLI's WARNING only their errors, so the CLI's stderr on bad
input is its one `error:` line (BACKDROP_LOG_LEVEL=INFO shows it their warnings too). Everything
they print goes through this one handler, held to that level and escaped: Python warnings
(FutureWarning, UserWarning... from torch, PIL, diffusers) are logged as `py.warnings` records;
transformers and diffusers, which print through a stderr handler of their own (bypassing every
level set here) and draw progress bars ("Loading pipeline components", "Loading weights", "Writing
model shards") whether or not stderr is a terminal, have their handler removed, their records
sent here and their bars turned off as soon as they are imported (`_tame_hf_logging`).

Logged text may hold user text (file names, prompts, exception messages): `SafeFormatter` writes
control characters as escapes (core.files.terminal_safe), so a log line cannot move the cursor,
recolour or clear a terminal, or forge a second log line; a traceback keeps its own line breaks.
Nor can it show a password (core.config.redact: a URL printed or logged anywhere is masked).
"""
from __future__ import annotations

import contextlib
import importlib.abc
import logging
import sys
import threading
import traceback
from typing import Optional, Union

from core.config import redact
from core.errors import BackdropError
from core.files import terminal_safe
from core.settings import settings

ENV = "BACKDROP_LOG_LEVEL"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
APP_LOGGERS = ("core", "ui", "pages", "bench", "backdrop", "__main__")

_lock = threading.Lock()


class SafeFormatter(logging.Formatter):
    """A Formatter whose output has no raw control characters: the message line is escaped whole
    (a newline in it becomes `\\n`); a traceback keeps the line breaks of its frames, while each
    exception message in it is escaped whole, as the message is. No password either: URLs'
    user:PASSWORD@ and password=... parameters, and the configured URLs' passwords anywhere in the
    line, are shown as *** (core.config.redact)."""

    def format(self, record: logging.LogRecord) -> str:
        # another handler's formatter may have cached its own (unescaped) traceback text
        saved = record.exc_text
        record.exc_text = None if record.exc_info else (saved and _escape_lines(saved))
        try:
            return redact(super().format(record))
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


def library_level(level: int) -> int:
    """The level other libraries log at when Backdrop's loggers log at `level`."""
    return max(logging.WARNING, level + 10)


def _is_app(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in APP_LOGGERS)


class _LibraryFilter(logging.Filter):
    """Drops another library's records under `level`, whatever level its own logger was given
    (huggingface_hub and transformers set theirs to WARNING, which the root's level cannot raise)."""

    def __init__(self) -> None:
        super().__init__()
        self.level = logging.WARNING

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or _is_app(record.name)


HF_LOGGING = ("transformers.utils.logging", "diffusers.utils.logging")


def _tame_hf_logging(module) -> None:
    """transformers' or diffusers' logging module: no stderr handler of its own (its records reach
    ours, held to the library level and escaped) and no progress bars."""
    module.disable_default_handler()
    module.enable_propagation()
    module.disable_progress_bar()


class _WhenImported(importlib.abc.MetaPathFinder):
    """Runs _tame_hf_logging on each module of HF_LOGGING right after it is first imported (the
    CLI imports them long after configure(); importing them up front would cost seconds)."""

    def find_spec(self, name, path, target=None):
        if name not in HF_LOGGING:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _ThenTame(spec.loader)
                return spec
        return None


class _ThenTame(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name):                 # get_source, get_filename, is_package...
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        try:
            _tame_hf_logging(module)
        except Exception:  # a library that changed its logging API still loads, only louder
            logging.getLogger(__name__).debug("could not quieten %s", module.__name__, exc_info=True)


def _quiet_libraries() -> None:
    """Python warnings and the Hugging Face libraries' own output through our handler, now and
    for those imported later."""
    logging.captureWarnings(True)
    if not any(isinstance(f, _WhenImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _WhenImported())
    for name in HF_LOGGING:
        module = sys.modules.get(name)
        if module is not None:
            try:
                _tame_hf_logging(module)
            except Exception:  # as in _ThenTame
                logging.getLogger(__name__).debug("could not quieten %s", name, exc_info=True)


def _ours() -> Optional[logging.Handler]:
    return next((h for h in logging.getLogger().handlers if getattr(h, "_backdrop", False)), None)


def configure(level: Union[str, int, None] = None, *, default: Union[str, int] = "INFO") -> int:
    """Set up logging: the first call adds one stderr handler to the root logger (and routes Python
    warnings and transformers' and diffusers' output to it); every call (re)sets the levels.
    Returns the level Backdrop's loggers now use. Safe to call on every rerun of the Streamlit
    script and from several threads."""
    bad_env = None
    chosen = _level_from(level)
    if chosen is None:
        try:
            env = settings().log_level
        except BackdropError:     # a bad setting is reported where it is used (one line)
            env = ""
        chosen = _level_from(env)
        if chosen is None and env:
            bad_env = env
    if chosen is None:
        chosen = _level_from(default) or logging.INFO
    with _lock:
        root = logging.getLogger()
        handler = _ours()
        if handler is None:
            handler = _StderrHandler()
            handler.setFormatter(SafeFormatter(FORMAT))
            handler.addFilter(_LibraryFilter())
            handler._backdrop = True
            root.addHandler(handler)
        libraries = library_level(chosen)
        for f in handler.filters:
            if isinstance(f, _LibraryFilter):
                f.level = libraries
        root.setLevel(libraries)
        for name in APP_LOGGERS:
            logging.getLogger(name).setLevel(chosen)
        _quiet_libraries()
    if bad_env is not None:
        logging.getLogger(__name__).warning("%s=%r is not a log level; using %s", ENV, bad_env,
                                            logging.getLevelName(chosen))
    return chosen


@contextlib.contextmanager
def quiet_transformers():
    """transformers' "Loading weights" / "Writing model shards" bars off for the block (noise for a
    sub-second load), back on after if they were on. The switch is process-wide: a transformers
    load in another thread at the same moment loses its bar too, which is harmless. Where
    configure() ran (the CLI, the app) the bars are off for good already; this is for the processes
    that never call it (the service's replicas)."""
    from transformers.utils import logging as hf_logging
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()
