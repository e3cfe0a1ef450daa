"""Every BACKDROP_* setting in one place: its type, default and what it does.

    from core.settings import settings
    settings().data_dir            # Path("data") unless BACKDROP_DATA_DIR says otherwise

`settings()` reads the environment once and again only when a BACKDROP_* variable changed (tests
set them per test). A value of the wrong type is one InvalidOptionError line naming the variable.
An empty (or blank) variable counts as unset. core/config.py holds the readers most code uses
(data_dir(), database_url(), …); nothing else reads Backdrop's settings from os.environ.

docs/configuration.md's table is generated from this class: `python -m core.settings --readme`
rewrites it, and tests/unit/test_settings.py fails when the two disagree.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import InvalidOptionError

PREFIX = "BACKDROP_"


def _setting(default: Any, description: str, shown: Optional[str] = None, **kw: Any) -> Any:
    """A field: `description` is the table's row; `shown` its Default column where the default is
    worked out at run time (otherwise the default itself is shown)."""
    return Field(default, description=description, json_schema_extra={"shown": shown} if shown else None,
                 **kw)


class Settings(BaseSettings):
    """Backdrop's settings, from the BACKDROP_* environment variables (docs/configuration.md)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore",
                                      frozen=True)

    # -- where things live
    data_dir: Path = _setting(Path("data"), "history DB and images", shown="`./data`")
    database_url: str = _setting(
        "", "SQLite or `postgresql+psycopg://…` (Team deployment)",
        shown="`sqlite:///<data dir>/history.db`", repr=False)
    weights_dir: Path = _setting(Path("weights"), "model files", shown="`./weights`")
    # -- models and how they run
    segmenter: str = _setting("sam2-tiny", "the app's default segmenter")
    inpaint_model: str = _setting("sd15-inpainting", "the app's default inpainting model")
    mode: str = _setting("", "where the app and `replace` start: `fast` or `quality` (see Fast and "
                             "Quality)", shown="`fast` without a CUDA GPU, else `quality`")
    device: str = _setting("", "the device every model runs on: `cpu`, `cuda`, `cuda:N` or `mps`",
                           shown="`cuda`, else `mps`, else `cpu`")
    dtype: str = _setting("", "override the inpainting precision: `float16`, `bfloat16` or `float32`",
                          shown="fp16 on CUDA, fp32 on MPS and CPU")
    compile: bool = _setting(False, "`1`: `torch.compile` the UNet on CUDA (the warm-up shows as "
                                    "`compile` in a run's timings)", shown="off")
    cpu_backend: Literal["auto", "torch", "openvino", "openvino-int8"] = _setting(
        "torch", "what runs the inpainting UNet, text encoder and autoencoder, the SAM / SAM 2.1 image "
                 "encoders and BiRefNet on a CPU: `torch`, "
                 "`openvino` (converted once, cached in the weights folder: docs/cpu.md), "
                 "`openvino-int8` (the same with int8 weights; needs `pip install nncf`) or `auto` "
                 "(OpenVINO when installed)",
        shown="`torch`")
    sam_url_base: str = _setting("", "where SAM checkpoints are downloaded from (a mirror): the "
                                     "file name is appended", shown="Meta's download site")
    # -- logging
    log_level: str = _setting(
        "", "Python logging level of Backdrop's own loggers; other libraries (their warnings, Python "
            "warnings) log one level above it and at least at WARNING, and their progress bars are off",
        shown="`INFO` (app), `WARNING` (CLI)")
    debug: bool = _setting(False, "`1`: the CLI shows the traceback of an internal error (a bug) "
                                  "instead of one line", shown="off")
    # -- history and the image store
    machine_id: str = _setting(
        "", "names this machine in a SQLite history's identity; set it in a container whose host "
            "name changes at each start (otherwise each start takes a new store id and claims its "
            "images again)", shown="host name + `/etc/machine-id`")
    sweep_grace_s: float = _setting(3600.0, "seconds: the clean-up of a crashed run's images leaves "
                                            "anything used more recently alone", ge=0)
    blob_url: str = _setting("", "shared image store: a folder or `s3://bucket/prefix` (Team "
                                 "deployment)", shown="the data dir")
    s3_endpoint_url: str = _setting("", "the S3-compatible endpoint (MinIO, Ceph, R2) of an "
                                        "`s3://` image store", shown="`AWS_ENDPOINT_URL_S3`, "
                                        "`AWS_ENDPOINT_URL`, else AWS", repr=False)
    s3_addressing_style: Optional[Literal["auto", "path", "virtual"]] = _setting(
        None, "how the bucket is named in S3 requests: `path`, `virtual` (host name) or `auto`",
        shown="`path` with an endpoint URL, else `auto`")
    s3_timeout_s: float = _setting(30.0, "the longest an S3 request may wait (seconds, 2 to 600), "
                                         "retry included; an endpoint that does not answer fails "
                                         "history writes at once for as long (logged), and no "
                                         "history lock is held meanwhile", gt=0)
    # -- team mode: the app and the CLI as clients, and the service (python -m core serve)
    server_url: str = _setting("", "the service the app and the CLI hand their work to (Team "
                                   "deployment); unset: everything runs in this process",
                               shown="unset", repr=False)
    api_token: str = _setting("", "the bearer token of the service: the service requires it, the "
                                  "app and the CLI send it", shown="unset (no auth)", repr=False)
    api_max_upload_mb: float = _setting(64.0, "the service's largest request body (MB; 413 above it)",
                                        ge=0.001)
    serve_replicas: str = _setting("1", "replicas of each model deployment of the service: `N`, or "
                                        "`MIN-MAX` to autoscale between them")
    serve_num_gpus: Optional[float] = _setting(None, "GPUs per model replica (fractions allowed)",
                                               shown="`1` with a CUDA GPU, else `0`", ge=0)
    serve_num_cpus: float = _setting(1.0, "CPUs per model replica", ge=0)
    serve_preload: str = _setting("", "comma-separated models each replica loads at start "
                                      "(segmenters and/or inpainting models)", shown="none")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return cls.model_fields[info.field_name].default
        return value


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def _problem(error: ValidationError, environ: Mapping[str, str]) -> InvalidOptionError:
    """The first thing wrong, as one line naming the variable (never a pydantic report)."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first.get("loc") else ""
    name = env_name(field)
    ctx = first.get("ctx") or {}
    kind = first.get("type", "")
    if kind in ("float_parsing", "float_type", "finite_number"):
        what = "must be a number"
    elif kind in ("greater_than_equal", "greater_than"):
        what = f"must be {'at least' if kind == 'greater_than_equal' else 'more than'} " \
               f"{ctx.get('ge', ctx.get('gt')):g}"
    elif kind == "bool_parsing":
        what = "must be 1 or 0 (or true or false)"
    elif kind == "literal_error":
        what = f"must be one of {ctx.get('expected', '')}"
    else:
        what = f"is not valid ({first.get('msg', kind)})"
    secret = field in Settings.model_fields and Settings.model_fields[field].repr is False
    value = next((v for k, v in environ.items() if k.upper() == name), None)
    got = "" if secret or value is None else f", got {value.strip()!r}"
    return InvalidOptionError(f"{name} {what}{got}")


def load(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """The settings of `environ` (default: this process's environment), freshly read."""
    try:
        if environ is None:
            return Settings()
        values = {}
        for field, info in Settings.model_fields.items():   # every field: os.environ plays no part
            value = environ.get(env_name(field), "")
            values[field] = value if value.strip() else info.default
        return Settings(**values)
    except ValidationError as e:
        raise _problem(e, os.environ if environ is None else environ) from None


_NAMES = tuple(env_name(field) for field in Settings.model_fields)
_ENCODE = getattr(os.environ, "encodekey", None)
_RAW_NAMES = tuple(map(_ENCODE, _NAMES)) if _ENCODE else None
_current: Optional[tuple[tuple[Any, ...], Settings]] = None


def _key() -> tuple[Any, ...]:
    """The variables' values as they are now: from CPython's own dict behind os.environ where
    there is one (~2 µs; 25 os.environ.get calls take 20 times as long)."""
    data = getattr(os.environ, "_data", None)
    if _RAW_NAMES is not None and type(data) is dict:
        return tuple(map(data.get, _RAW_NAMES))
    return tuple(map(os.environ.get, _NAMES))


def settings() -> Settings:
    """The current settings: read once, and again only after a BACKDROP_* variable changed.
    InvalidOptionError (one line naming the variable) when one holds a value of the wrong type."""
    global _current
    key = _key()
    current = _current
    if current is None or current[0] != key:
        current = (key, load())
        _current = current
    return current[1]


def raw(name: str) -> str:
    """BACKDROP_* variable `name` as set, unchecked ("" when unset): the URLs whose passwords
    messages hide (core.config.redact), even while a setting is invalid."""
    return os.environ.get(name, "") if name.startswith(PREFIX) else ""


# ------------------------------------------------------ the table in docs/configuration.md --
README = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def _default_text(info: Any) -> str:
    shown = (info.json_schema_extra or {}).get("shown")
    if shown:
        return shown
    value = info.default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def markdown_table() -> str:
    """docs/configuration.md's table: one row per setting, in the order of the class."""
    rows = ["| variable | default | |", "|---|---|---|"]
    for field, info in Settings.model_fields.items():
        rows.append(f"| `{env_name(field)}` | {_default_text(info)} | {info.description} |")
    return "\n".join(rows) + "\n"


def readme_table(text: str) -> str:
    """The table between the markers in docs/configuration.md's `text`."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip("\n") + "\n"


def write_readme(path: Path = README) -> bool:
    """Put the generated table between the markers in docs/configuration.md; whether it changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(START) + len(START), text.index(END)
    new = text[:start] + "\n" + markdown_table() + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":     # python -m core.settings [--markdown | --readme]
    if sys.argv[1:] == ["--readme"]:
        print("docs/configuration.md updated" if write_readme() else "docs/configuration.md already up to date")
    else:
        sys.stdout.write(markdown_table())
