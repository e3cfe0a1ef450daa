"""Where things live: readers of the settings (core/settings.py), current at each call (so tests
can point elsewhere)."""
from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from core.errors import InvalidOptionError
from core.settings import Settings, raw, settings


def data_dir() -> Path:
    """History images and the default SQLite DB. `BACKDROP_DATA_DIR`, default ./data."""
    return settings().data_dir.resolve()


def database_url() -> str:
    """`BACKDROP_DATABASE_URL`, default sqlite:///<data dir>/history.db. A team shares one
    PostgreSQL history with postgresql+psycopg://user:password@host:5432/dbname (core/history)."""
    return settings().database_url or f"sqlite:///{data_dir() / 'history.db'}"


def blob_url() -> str:
    """Where history images are stored: `BACKDROP_BLOB_URL`; empty (default) = the data dir.
    A folder path (or file:///folder: a mounted network filesystem works as is) or
    s3://bucket/prefix for S3-compatible object storage shared by a team (core/history/blobs/;
    endpoint BACKDROP_S3_ENDPOINT_URL or AWS_ENDPOINT_URL, credentials from the AWS_* settings)."""
    return settings().blob_url


def weights_dir() -> Path:
    """Model files. `BACKDROP_WEIGHTS_DIR`, default ./weights."""
    return settings().weights_dir.resolve()


def _default(field: str) -> str:
    """A default the run spec and the app's state are built from, also on import: a bad value of
    another setting does not stop it (the CLI and every page of the app report that one first)."""
    try:
        return getattr(settings(), field)
    except InvalidOptionError:
        return Settings.model_fields[field].default


def default_segmenter() -> str:
    """`BACKDROP_SEGMENTER`, default sam2-tiny (fastest image embedding on a CPU)."""
    return _default("segmenter")


def default_inpaint_model() -> str:
    """`BACKDROP_INPAINT_MODEL`, default SD 1.5 inpainting."""
    return _default("inpaint_model")


MODES = ("fast", "quality")


def default_mode() -> str:
    """`BACKDROP_MODE` (fast | quality), else fast without a CUDA GPU (CPU, Apple silicon: a
    few-step distilled LoRA) and quality with one (30 full steps)."""
    mode = _default("mode").lower()
    if mode in MODES:
        return mode
    from core import devices
    try:
        return "quality" if devices.pick().startswith("cuda") else "fast"
    except Exception:   # an unusable BACKDROP_DEVICE is reported where the model loads
        return "fast"


def server_url() -> str:
    """`BACKDROP_SERVER_URL`: the team service (python -m core serve) the app and the CLI hand their
    work to; empty (the default) = everything runs in this process."""
    return settings().server_url


# ------------------------------------------------------------------------------ secrets --
_SCHEME_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]*")
_SECRET_PARAM = re.compile(r"(?i)\b(password|passwd|pwd|secret|sslpassword|token)(\s*=\s*)"
                           r"('[^']*'|\"[^\"]*\"|[^&\s'\";,)]+)")
_SETTINGS_WITH_SECRETS = ("BACKDROP_DATABASE_URL", "BACKDROP_BLOB_URL", "BACKDROP_S3_ENDPOINT_URL",
                          "BACKDROP_SERVER_URL")
_AWS_WITH_SECRETS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
MASK = "***"


def _userinfo_password(url: str) -> str:
    """The password part of `scheme://user:password@host…` (or `user:password@host…`), read
    leniently: a malformed URL too (the password may hold @, / or :). "" when there is none."""
    rest = url.split("://", 1)[1] if "://" in url else url
    if "@" not in rest:
        return ""
    userinfo = rest.rsplit("@", 1)[0]
    if "/" in userinfo.split(":", 1)[0]:        # "host/path…@" is a path, not a user
        return ""
    return userinfo.split(":", 1)[1] if ":" in userinfo else ""


def mask_url(url: str) -> str:
    """`url` with its password (user:PASSWORD@, and password=… parameters) shown as ***; for
    display in messages and logs. Works on malformed URLs too."""
    url = str(url)
    password = _userinfo_password(url)
    if password:
        head, _, tail = url.rpartition("@")
        user_end = head.find(":", head.find("://") + 3 if "://" in head else 0)
        url = f"{head[:user_end]}:{MASK}@{tail}"
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", url)


def _known_secrets() -> list[str]:
    out = []
    values = [raw(name) for name in _SETTINGS_WITH_SECRETS]   # as set: valid or not, hidden
    for value in values + [os.environ.get(name, "") for name in _AWS_WITH_SECRETS]:
        password = _userinfo_password(value) if value else ""
        if password:
            out.append(password)
            unquoted = urllib.parse.unquote(password)
            if unquoted != password:
                out.append(unquoted)
        out += [m.group(3).strip("'\"") for m in _SECRET_PARAM.finditer(value)]
    return sorted({s for s in out if len(s) >= 3}, key=len, reverse=True)


def redact(text: object) -> str:
    """`text` (an error message, a log line) with every password hidden: URLs' user:PASSWORD@ and
    password=… parameters, and the passwords of the configured URLs (BACKDROP_DATABASE_URL, …)
    wherever they appear, even in a driver's message about a URL it could not parse."""
    s = str(text)
    for secret in _known_secrets():
        s = s.replace(secret, MASK)
    s = _SCHEME_URL.sub(lambda m: mask_url(m.group(0)), s)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", s)
