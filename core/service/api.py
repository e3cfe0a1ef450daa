"""The HTTP API: a FastAPI app served by the `Api` ingress deployment (versioned under /v1).

    POST /v1/embed          photo (upload or history source) -> embedding handle
    POST /v1/segment        photo, source or embedding handle + clicks/box -> masks (PNG, base64)
    POST /v1/replace        photo or source (+ mask upload) + a RunSpec -> run id and output hashes
    GET  /v1/runs           history, newest first: search, filters, cursor/offset paging
    GET  /v1/runs/{id}      one run
    GET  /v1/files/{hash}   a stored image (PNG; ?thumb=true for the WebP thumbnail)
    GET  /v1/health         liveness (no auth)
    GET  /docs, /openapi.json

Bodies: application/json, or multipart/form-data with the photo as file `photo` (and a subject
mask as file `mask`, 255 = subject), the other fields as form fields whose object values are JSON
text (e.g. `spec={"background": "color:#00ff00", ...}`). The body of /v1/replace is a RunSpec
(core/spec.py) plus where the photo comes from: the same model, the same one-line errors as the CLI.

Errors are JSON {"error": "<one line>"} (header X-Backdrop-Error: the core.errors class): 400
malformed request, 401 missing/wrong token, 404 unknown run/file/source, 413 upload too large,
422 invalid option or unreadable image, 503 model weights missing or a replica lost; anything else
is logged with its traceback and answered 500 with one line.
"""
# (no `from __future__ import annotations`: FastAPI reads the route annotations of the ingress)

import base64
import hashlib
import hmac
import json
import logging
import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Optional
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from ray import serve
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import config, weights
from core.errors import (BackdropError, CancelledError, DownloadError, HistoryError, ImageError,
                         InvalidOptionError, MissingWeightsError, OutOfMemoryError)
from core.segment.types import SegmentRequest
from core.service.config import ServiceConfig, apply_env
from core.images import MAX_PIXELS
from core.service.deployments import ReplicaLost, call, hide_paths
from core.service.photos import NotFound
from core.spec import KINDS, RunSpec, one_line

log = logging.getLogger("backdrop.service")

API_VERSION = "1"
HASH = r"^[0-9a-f]{64}$"
_HASH = re.compile(HASH)
MAX_PAGE = 200
CURSOR = r"^[0-9]{1,16}-[0-9]{1,18}$"     # core.history.records.encode_cursor
MAX_ID = 2**63 - 1        # the largest run id a history database can hold (BIGINT)


# ------------------------------------------------------------------------------- request models --
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _segmenters() -> list[str]:
    """The segmenter names a request may give: those of the weights registry whose files this
    service has (GrabCut needs none), and its default (BACKDROP_SEGMENTER; a 503 saying which
    file is missing when it has not been downloaded)."""
    names = [s.name for s in weights.specs("segment") if weights.is_present(s)]
    default = config.default_segmenter()
    return names if default in names else [*names, default]


def _known_segmenter(name: str) -> str:
    names = _segmenters()
    if name not in names:
        raise ValueError(f"unknown segmenter {name[:80]!r} on this service; available: "
                         f"{', '.join(names)}")
    return name


Segmenter = Annotated[str, AfterValidator(_known_segmenter), Field(
    max_length=200, description="segmentation model (one this service has the weights of)",
    json_schema_extra=lambda js: js.update(enum=_segmenters()))]
Hash = Annotated[str, Field(pattern=HASH, description="content hash of a photo already in the history")]
PHOTO_TYPES = "image/jpeg, image/png, image/webp, image/tiff, image/bmp, image/gif, image/heic, image/avif"


def _photo_field(required: bool = True, what: str = "the photo"):
    text = (f"{what}: JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC or AVIF, at most the service's upload limit "
            f"(BACKDROP_API_MAX_UPLOAD_MB, 413 above it) and {MAX_PIXELS / 1e6:.0f} MP "
            f"(422 above it); an unreadable image is a 422")
    return Field(... if required else None, description=text)


class EmbedJson(_Body):
    """/v1/embed with a photo already in the history."""
    source: Hash
    segmenter: Segmenter = Field(default_factory=config.default_segmenter)


class EmbedForm(_Body):
    """/v1/embed with the photo uploaded (multipart/form-data)."""
    photo: bytes = _photo_field()
    segmenter: Segmenter = Field(default_factory=config.default_segmenter)


MAX_MASK_SIDE = math.isqrt(MAX_PIXELS)


class _SegmentFields(_Body):
    segmenter: Segmenter = Field(default_factory=config.default_segmenter)
    request: SegmentRequest = Field(description="clicks and/or box, original pixels; multimask")
    width: Optional[int] = Field(None, ge=1, le=MAX_MASK_SIDE,
                                 description="masks at this size (default: the photo's); give width "
                                             "and height together")
    height: Optional[int] = Field(None, ge=1, le=MAX_MASK_SIDE)
    model_config = ConfigDict(json_schema_extra={"dependentRequired": {"width": ["height"],
                                                                        "height": ["width"]}})

    @model_validator(mode="after")
    def _size(self):
        if (self.width is None) != (self.height is None):
            raise ValueError("give the mask size as both width and height, or neither")
        return self


class SegmentBySource(_SegmentFields):
    """/v1/segment on a photo already in the history."""
    source: Hash


class SegmentByEmbedding(_SegmentFields):
    """/v1/segment on an embedding kept by the service (from /v1/embed or an earlier segment)."""
    embedding: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}:[0-9a-f]{64}$", max_length=300,
                           description="handle from /v1/embed: SEGMENTER:HASH (404 when the service no "
                                       "longer keeps it: send the photo again)")


class SegmentForm(_SegmentFields):
    """/v1/segment with the photo uploaded (multipart/form-data; `request` as JSON text)."""
    photo: bytes = _photo_field()


def _inpaint_models() -> list[str]:
    """The inpainting models a request may name: those of the weights registry this service has,
    and its default (BACKDROP_INPAINT_MODEL; a 503 saying which file is missing when it has not
    been downloaded). Never a file, folder or Hugging Face repo id over the API."""
    names = [s.name for s in weights.specs("inpaint") if weights.is_present(s)]
    default = config.default_inpaint_model()
    return names if default in names else [*names, default]


def _registry_model(spec: RunSpec) -> RunSpec:
    gen = spec.generation
    if gen is not None and gen.model not in _inpaint_models():
        known = ", ".join(_inpaint_models())
        raise ValueError(f"unknown inpainting model {gen.model[:80]!r}: the API takes the name of a model "
                         f"this service has ({known}; `python -m core models download NAME` on the "
                         "service adds one), never a file, folder or repo id")
    if spec.background.kind == "image":
        raise ValueError("an image background names a file on the server; it is not available "
                         "through the API")
    return spec


ApiSpec = Annotated[RunSpec, AfterValidator(_registry_model), Field(
    description="every parameter of the run (the RunSpec of core/spec.py); over the API "
                "generation.model is a registry name and the background is not an image file")]


class _ReplaceFields(_Body):
    spec: ApiSpec
    source_name: str = Field("", max_length=500, description="display name kept with the run")
    reuse: bool = Field(False, description="if this photo, subject mask, spec and source_name already "
                                           "ran (or are running), answer with that run instead of "
                                           "running again (`batch` sends it, so a rerun after a kill "
                                           "records nothing twice)")


class ReplaceJson(_ReplaceFields):
    """/v1/replace on a photo already in the history; the subject from the spec's clicks or box."""
    source: Hash


class ReplaceForm(_ReplaceFields):
    """/v1/replace with the photo (and optionally the subject mask) uploaded (multipart/form-data;
    `spec` as JSON text). Without a mask the subject comes from the spec's clicks or box."""
    photo: bytes = _photo_field()
    mask: Optional[bytes] = _photo_field(False, "the subject mask (same size as the photo, white = "
                                                "subject), instead of the spec's clicks or box")


# ------------------------------------------------------------------------------ response models --
class FileRef(BaseModel):
    hash: str
    width: int
    height: int
    url: str


class OutputRef(FileRef):
    seed: Optional[int] = None


class ReplaceResponse(BaseModel):
    run_id: int
    status: str
    outputs: list[OutputRef]
    mask: Optional[str] = None
    timings: dict[str, float] = {}
    reused: bool = Field(False, description="true when a `reuse` request was answered with an "
                                            "earlier run (nothing ran, nothing new recorded)")


class EmbedResponse(BaseModel):
    embedding: str = Field(description="pass to /v1/segment as `embedding`")
    image: str
    segmenter: str
    width: int
    height: int
    seconds: float


class SegmentResponse(BaseModel):
    width: int
    height: int
    best: int
    scores: list[float]
    masks: list[str] = Field(description="PNG (L, 255 = subject) per candidate, base64")
    embedding: str
    embedded: bool = Field(False, description="true when this call had to compute the embedding")


class ErrorBody(BaseModel):
    """Every error: one line saying what went wrong and what to do (header X-Backdrop-Error names
    the core.errors class where there is one)."""
    error: str = Field(examples=["no run with id 7 in the history"])


class OutputOut(BaseModel):
    id: int
    index: int
    seed: Optional[int] = None
    favorite: bool
    hash: str
    width: int
    height: int
    url: str


class RunOut(BaseModel):
    """One recorded run (no server paths)."""
    model_config = ConfigDict(extra="allow")
    id: int
    created: str
    finished: Optional[str] = None
    status: Literal["running", "succeeded", "failed", "cancelled"]
    source_name: str
    background: str
    prompt: Optional[str] = None
    model: Optional[str] = None
    favorite: bool
    duration: Optional[float] = None
    error: Optional[str] = None
    spec: dict[str, Any]
    timings: Optional[dict[str, float]] = None
    device: Optional[str] = None
    source: FileRef
    mask: Optional[FileRef] = None
    outputs: list[OutputOut]


class RunsPage(BaseModel):
    runs: list[RunOut]
    next_cursor: Optional[str] = Field(None, description="pass as `cursor` for the next page; null "
                                                         "on the last")
    total: Optional[int] = Field(None, description="with total=true: how many runs match")


class Health(BaseModel):
    ok: bool
    version: str
    retried: int


_MEANING = {
    400: "malformed request: not JSON, a broken multipart body, nested too deeply",
    401: "missing or wrong bearer token",
    403: "a cross-site request from a browser page",
    404: "no such run, file, history photo or kept embedding",
    409: "the run was cancelled",
    413: "the body is over the upload limit (BACKDROP_API_MAX_UPLOAD_MB)",
    415: "a body that is neither application/json nor multipart/form-data",
    422: "an invalid option, or an image that cannot be read; the line says which",
    500: "an unexpected error; the traceback is in the service log",
    503: "model weights missing on the service, a replica lost, or the history unreachable",
}
_POST_ERRORS = (400, 401, 403, 404, 413, 415, 422, 500, 503)
_GET_ERRORS = (401, 422, 500, 503)


def _responses(*codes: int) -> dict:
    """FastAPI `responses=`: each status an operation can answer, with the error body's schema."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in sorted(codes)}


# ---------------------------------------------------------------------------------------- app --
app = FastAPI(title="Backdrop API", version=API_VERSION,
              description="Replace photo backgrounds; every run is recorded in the shared history. "
                          "Errors are JSON {\"error\": \"<one line>\"}.")
_bearer = HTTPBearer(auto_error=False, description="BACKDROP_API_TOKEN, when the service sets one")
_settings: dict[str, Any] = {"token": None, "max_upload_bytes": 64 * 2**20}


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": _line(message)}, status_code=status, headers=headers)


# core.errors class -> HTTP status (the first match; anything else of core.errors: 422)
_STATUS = ((NotFound, 404), (ReplicaLost, 503), (MissingWeightsError, 503), (DownloadError, 503),
           (OutOfMemoryError, 503), (HistoryError, 503), (CancelledError, 409), (ImageError, 422),
           (InvalidOptionError, 422))


@app.exception_handler(HttpError)
async def _http_error(request: Request, e: HttpError):
    return _error(e.status, e.message, e.headers)


@app.exception_handler(BackdropError)
async def _backdrop_error(request: Request, e: BackdropError):
    status = next((s for cls, s in _STATUS if isinstance(e, cls)), 422)
    if isinstance(e, HistoryError) and str(e).startswith("no run with id"):
        status = 404
    # the history's own errors may name the database file or the image store: no server paths
    # (a replica's errors come through deployments.Failed, already without them)
    line = hide_paths(str(e)) if isinstance(e, HistoryError) else str(e)
    # the body is the one line; the header names the class, so a client raises the same error
    return _error(status, line, {"X-Backdrop-Error": type(e).__name__})


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, e: RequestValidationError):
    return _error(422, _one_line_errors(e.errors()))


@app.exception_handler(StarletteHTTPException)
async def _starlette_error(request: Request, e: StarletteHTTPException):
    return _error(e.status_code, str(e.detail), getattr(e, "headers", None))


@app.exception_handler(Exception)
async def _unexpected(request: Request, e: Exception):
    log.error("%s %s failed", request.method, request.url.path, exc_info=e)
    return _error(500, f"internal error ({type(e).__name__}); the traceback is in the service log")


class _Errors:
    """Duck-types a pydantic ValidationError for core.spec.one_line."""
    def __init__(self, errors): self._errors = list(errors)
    def errors(self, include_url=False): return self._errors


def _one_line_errors(errors) -> str:
    errors = [dict(e) for e in errors]
    for e in errors:
        e["loc"] = tuple(p for p in e.get("loc", ()) if p not in ("body", "query", "path"))
    return one_line(_Errors(errors)) if errors else "invalid request"


_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _same_site(request: Request) -> None:
    """A browser page of another site must not make the service run jobs (a cross-site form post
    needs no token where the service has none, and reaches a service on localhost): a POST whose
    browser says it comes from elsewhere (Sec-Fetch-Site, Origin) is refused. Scripts send neither."""
    if request.method in _SAFE_METHODS:
        return
    site = request.headers.get("sec-fetch-site", "").lower()
    origin = request.headers.get("origin")
    host = (request.headers.get("x-forwarded-host") or request.headers.get("host") or "").lower()
    if site in ("cross-site", "same-site") or (
            origin is not None and (urlsplit(origin).netloc.lower() or origin) != host.split(",")[0].strip()):
        raise HttpError(403, "cross-site requests are refused: call the API from a script or from this "
                             "service's own pages")


def _auth(request: Request, creds: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> None:
    _same_site(request)
    token = _settings.get("token")
    if not token:
        return
    if creds is None:
        raise HttpError(401, "this service needs a bearer token: send Authorization: Bearer <token>",
                        {"WWW-Authenticate": "Bearer"})
    if not authorized(f"Bearer {creds.credentials}", token):
        raise HttpError(401, "the bearer token is not valid", {"WWW-Authenticate": "Bearer"})


def authorized(header: Optional[str], token: Optional[str]) -> bool:
    """Whether an Authorization header value passes for `token` (None = no auth required)."""
    if not token:
        return True
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


# -------------------------------------------------------------------------------- body parsing --
def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    if not isinstance(data, dict):
        raise HttpError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidOptionError(one_line(e)) from None
    except RecursionError:
        raise HttpError(400, "the request body is nested too deeply") from None


def _too_large(limit: int, size: Optional[int] = None) -> HttpError:
    told = f"the request is {size / 2**20:.1f} MB" if size is not None else "the request is over the limit"
    return HttpError(413, f"{told}; the limit is {limit / 2**20:.0f} MB (BACKDROP_API_MAX_UPLOAD_MB)")


async def _read(request: Request, limit: int) -> bytes:
    """The whole body, counted as it arrives (a chunked body has no Content-Length to check first):
    413 as soon as it passes `limit`, without reading the rest. Kept on the request, so
    request.form() parses these bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body          # starlette's cache: stream()/form() read it from here
    return body


def _object_fields(model: type[BaseModel]) -> set[str]:
    """The fields of `model` whose values are objects (a form field carries them as JSON text);
    every other form field is text as it is, even when it starts with "[" or "{"."""
    import typing
    out = set()
    for name, field in model.model_fields.items():
        kinds = [field.annotation, *typing.get_args(field.annotation)]
        if any(isinstance(k, type) and issubclass(k, (BaseModel, dict, list)) for k in kinds):
            out.add(name)
    return out


def _loads(raw, what: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise HttpError(400, f"{what} is nested too deeply") from None
    except ValueError:
        raise HttpError(400, f"{what} is not valid JSON") from None


async def _body(request: Request, json_model, form_model: type[BaseModel]) -> tuple[BaseModel, dict[str, bytes]]:
    """(the validated body, {"photo": bytes, "mask": bytes} uploads) of a JSON or multipart request:
    JSON is validated with `json_model` (a model, or a function of the data choosing one), a
    multipart form with `form_model` (its bytes fields are the file parts)."""
    limit = _settings["max_upload_bytes"]
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise _too_large(limit, int(length))
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json", ""):
        raise HttpError(415, f"send application/json or multipart/form-data, not {kind[:80]!r}")
    raw = await _read(request, limit)
    if kind != "multipart/form-data":
        data = _loads(raw or b"{}", "the request body")
        model = json_model(data) if not isinstance(json_model, type) else json_model
        return _validate(model, data), {}
    objects, uploads = _object_fields(form_model), _file_fields(form_model)
    data: dict[str, Any] = {}
    for key, blob, is_file in _form_parts(raw, request.headers.get("content-type", "")):
        if is_file and key not in uploads:
            raise HttpError(400, f"unexpected file field {key[:40]!r}: send the photo as 'photo'"
                                 + (" (and a subject mask as 'mask')" if "mask" in uploads else ""))
        if key in uploads:          # a file part, with or without a filename: its bytes as sent
            data[key] = blob
            continue
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, f"form field {key[:40]!r} is not UTF-8 text") from None
        data[key] = _loads(text, f"form field {key!r}") if key in objects else text
    body = _validate(form_model, data)
    return body, {k: getattr(body, k) for k in uploads if getattr(body, k, None) is not None}


MAX_PARTS = 24


def _form_parts(raw: bytes, content_type: str) -> list[tuple[str, bytes, bool]]:
    """(name, bytes, has a filename) of each part of a multipart/form-data body, bytes as sent (a
    file part without a filename is still a file: starlette would decode it as text). HttpError
    400 for a malformed body or more than MAX_PARTS parts."""
    from python_multipart.multipart import MultipartParser, parse_options_header
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HttpError(400, "could not read the multipart body: no boundary in its Content-Type")
    parts: list[tuple[str, bytes, bool]] = []
    part: dict[str, Any] = {}

    def begin() -> None:
        part.clear()
        part.update(headers={}, name=b"", value=b"", data=bytearray())

    def header_field(d: bytes, a: int, b: int) -> None:
        part["name"] += d[a:b]

    def header_value(d: bytes, a: int, b: int) -> None:
        part["value"] += d[a:b]

    def header_end() -> None:
        part["headers"][part["name"].lower()] = part["value"]
        part["name"] = part["value"] = b""

    def data(d: bytes, a: int, b: int) -> None:
        part["data"] += d[a:b]

    def end() -> None:
        _, options = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if b"name" not in options:
            raise HttpError(400, "could not read the multipart body: a part has no name")
        if len(parts) >= MAX_PARTS:
            raise HttpError(400, f"too many form parts (at most {MAX_PARTS})")
        parts.append((options[b"name"].decode("utf-8", "replace"), bytes(part["data"]), b"filename" in options))

    callbacks = {"on_part_begin": begin, "on_header_field": header_field, "on_header_value": header_value,
                 "on_header_end": header_end, "on_part_data": data, "on_part_end": end}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(raw)
        parser.finalize()
    except HttpError:
        raise
    except Exception as e:    # python-multipart's own message, one line
        raise HttpError(400, f"could not read the multipart body: {e}") from None
    return parts


def _file_fields(model: type[BaseModel]) -> set[str]:
    import typing
    return {name for name, f in model.model_fields.items()
            if bytes in (f.annotation, *typing.get_args(f.annotation))}


def _segment_model(data: Any):
    return SegmentByEmbedding if isinstance(data, dict) and "embedding" in data else SegmentBySource


# ------------------------------------------------------------------------------------ document --
def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _doc(json_models: tuple[type[BaseModel], ...], form_model: type[BaseModel]) -> dict:
    """openapi_extra: the body is JSON (one of `json_models`) or multipart/form-data (`form_model`:
    its bytes fields are file parts, its object fields JSON text)."""
    json_schema = _ref(json_models[0]) if len(json_models) == 1 else {"oneOf": [_ref(m) for m in json_models]}
    encoding = {name: {"contentType": "application/json"} for name in _object_fields(form_model)}
    encoding.update({name: {"contentType": PHOTO_TYPES} for name in _file_fields(form_model)})
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_schema},
        "multipart/form-data": {"schema": _ref(form_model), "encoding": encoding}}}}


_BODIES = (EmbedJson, EmbedForm, SegmentBySource, SegmentByEmbedding, SegmentForm, ReplaceJson,
           ReplaceForm)


def _fix_bounds(node: Any) -> None:
    """pydantic writes a constraint of an annotated custom type as "ge"/"le"/"gt"/"lt" where JSON
    Schema says minimum/maximum/exclusiveMinimum/exclusiveMaximum: rename them, everywhere."""
    names = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            for old, new in names.items():
                if old in node:
                    node[new] = node.pop(old)
        for v in node.values():
            _fix_bounds(v)
    elif isinstance(node, list):
        for v in node:
            _fix_bounds(v)


def _spec_rules(comps: dict) -> None:
    """The run spec's rules across fields, stated in its schema: a Stable Diffusion background
    needs `generation` (its prompt), every other background has none; over the API the
    background is never an image file and generation.model is a registry name; a click-based
    subject (no mask uploaded: always in JSON) needs clicks or a box and a segmenter."""
    spec = comps["RunSpec"]
    def background(sd: bool) -> dict:
        kinds = ["sd"] if sd else [k for k in KINDS if k not in ("sd", "image")]
        short = "^sd$" if sd else "^(transparent|color:|blur)"
        return {"anyOf": [{"type": "string", "pattern": short},
                          {"type": "object", "properties": {"kind": {"enum": kinds}}}]}
    spec["properties"]["background"] = {"anyOf": [_ref_name("Background"), {
        "type": "string", "description": "short form: sd, transparent, color:#RRGGBB or blur[:RADIUS]",
        "pattern": "^(sd|transparent|color:#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})|blur(:[0-9]{1,3}(\\.[0-9]{1,3})?)?)$"}]}
    spec.update({"if": {"properties": {"background": background(True)}},
                 "then": {"required": ["generation"], "properties": {"generation": _ref_name("Generation")}},
                 "else": {"properties": {"generation": {"type": "null"}}}})
    comps["Background"]["properties"]["kind"]["enum"] = [k for k in KINDS if k != "image"]
    comps["Background"]["properties"].pop("path", None)
    comps["Generation"]["properties"]["model"]["enum"] = _inpaint_models()
    # clicks or a box; clicks alone need one on the subject (label 1, the default)
    prompts = {"if": {"properties": {"box": {"type": "null"}}},
               "then": {"required": ["clicks"], "properties": {"clicks": {
                   "type": "array", "minItems": 1,
                   "contains": {"type": "object", "properties": {"label": {"const": 1}}}}}}}
    comps["SegmentRequest"].update(prompts)
    subject = {"type": "object", "properties": {"subject": {
        "type": "object", "required": ["segmenter"], "properties": {"segmenter": {"type": "string", "enum": _segmenters()}},
        **prompts}}, "required": ["subject"]}
    comps["ReplaceJson"]["properties"]["spec"] = {"allOf": [_ref_name("RunSpec"), subject]}
    # A multipart form refers to copies without the if/then rules (the service applies the same
    # rules; schema tools, schemathesis 4.32 among them, fail on conditions in a form that has a
    # file part). A form without `mask` needs a subject like the JSON body's.
    for form, field, name in (("ReplaceForm", "spec", "RunSpec"), ("SegmentForm", "request", "SegmentRequest")):
        plain = {k: v for k, v in comps[name].items() if k not in ("if", "then", "else")}
        plain["title"] = name + "Form"
        plain["description"] = (comps[name].get("description", "") + " In a form, the same rules "
                                "apply as in the JSON body's " + name + ".").strip()
        comps[name + "Form"] = plain
        comps[form]["properties"][field] = {**_ref_name(name + "Form"),
                                            "description": "JSON text (content type application/json)"}


def _ref_name(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _openapi() -> dict:
    """The document, made anew on each request (a few ms): its segmenter list follows the weights
    this service has now."""
    from fastapi.openapi.utils import get_openapi
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in _BODIES:
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        comps.update(js.pop("$defs", {}))
        comps[model.__name__] = js
    for name in ("EmbedForm", "SegmentForm", "ReplaceForm"):
        for prop in comps[name]["properties"].values():
            branches = prop.pop("anyOf", None)
            if branches:
                prop.update(next(b for b in branches if b.get("type") != "null"))
                if prop.get("default", 0) is None:
                    del prop["default"]
    comps.pop("HTTPValidationError", None)
    comps.pop("ValidationError", None)
    _spec_rules(comps)
    _fix_bounds(schema)
    return schema


app.openapi = _openapi


# ------------------------------------------------------------------------------------- helpers --
def _store():
    from core.history import open_store
    return open_store()


async def _photo(body: BaseModel, files: dict[str, bytes]):
    from core.service import photos
    return await run_in_threadpool(photos.photo, files.get("photo"), getattr(body, "source", None))


def _file_url(request: Request, digest: str) -> str:
    root = request.scope.get("root_path", "").rstrip("/")
    return f"{root}/v1/files/{digest}"


def _run_json(request: Request, run) -> dict:
    """A run for the API: its summary, spec and image hashes with URLs (never server paths: a
    failed run's error is shown with them hidden)."""
    out = run.summary()
    if out.get("error"):
        out["error"] = hide_paths(out["error"])
    out.update(finished=run.finished.isoformat() if run.finished else None,
               timings=run.timings, device=run.device,
               source={"hash": run.source.hash, "width": run.source.width,
                       "height": run.source.height, "url": _file_url(request, run.source.hash)},
               mask={"hash": run.mask.hash, "width": run.mask.width, "height": run.mask.height,
                     "url": _file_url(request, run.mask.hash)} if run.mask else None,
               outputs=[{"id": o.id, "index": o.index, "seed": o.seed, "favorite": o.favorite,
                         "hash": o.hash, "width": o.width, "height": o.height,
                         "url": _file_url(request, o.hash)} for o in run.outputs])
    return out


_RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")


def _when(value: Any) -> Optional[datetime]:
    """A query's date: RFC 3339 with its offset (what format date-time means), in UTC; anything
    else (a bare number, no offset) or a date whose offset takes it past year 1 or 9999 is a 422."""
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with its offset, e.g. 2026-12-06T09:30:00Z")
    text = value[:10] + "T" + value[11:17] + min(value[17:19], "59") + value[19:]   # leap second
    text = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", text).replace("z", "Z")
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ValueError("is not a date-time that exists in UTC") from None


When = Annotated[Optional[datetime], BeforeValidator(_when)]


def _reuse_key(body: "_ReplaceFields", files: dict[str, bytes]) -> Optional[str]:
    """For a `reuse` request: a hash of everything it asks for, so a repeat goes to the inpainter
    replica that ran (or is running) the first one."""
    if not body.reuse:
        return None
    h = hashlib.sha256()
    for part in (files.get("photo") or (getattr(body, "source", None) or "").encode(), files.get("mask") or b"",
                 json.dumps(body.spec.to_json(), sort_keys=True).encode(), body.source_name.encode()):
        h.update(hashlib.sha256(part).digest())
    return "run-" + h.hexdigest()


# ------------------------------------------------------------------------------------- ingress --
@serve.deployment(name="api", max_ongoing_requests=64)
@serve.ingress(app)
class Api:
    """The ingress: auth, limits, request validation, history reads and files; photos for
    embed/segment are decoded here (a replace's photo in the inpainter's replica); the heavy
    work goes to the model deployments, whose handles come in through `bind`."""

    def __init__(self, segmenter, inpainter, cfg: ServiceConfig):
        apply_env(cfg.env)
        # This class travels to the replica by value (Serve wraps it), with copies of the globals
        # it names; the routes' dependencies read the real module's settings, so set those.
        import core.service.api as module
        module._settings.update(token=cfg.token, max_upload_bytes=cfg.max_upload_bytes)
        self.segmenter, self.inpainter = segmenter, inpainter
        self.retried = 0

    async def _call(self, method, *args, photo: Optional[str] = None):
        retried = [0]
        try:
            return await call(method, *args, photo=photo, retried=retried)
        finally:
            self.retried += retried[0]

    # -- routes ----------------------------------------------------------------------------------
    @app.get("/v1/health", summary="liveness; no token needed", responses=_responses(500))
    async def health(self) -> Health:
        return {"ok": True, "version": API_VERSION, "retried": self.retried}

    @app.post("/v1/embed", response_model=EmbedResponse, dependencies=[Depends(_auth)],
              openapi_extra=_doc((EmbedJson,), EmbedForm), responses=_responses(*_POST_ERRORS),
              summary="photo -> embedding handle")
    async def embed(self, request: Request):
        body, files = await _body(request, EmbedJson, EmbedForm)
        image = await _photo(body, files)
        out = await self._call(self.segmenter.embed, body.segmenter, image.rgb, photo=image.hash)
        return {**out, "embedding": f"{out['segmenter']}:{out['image']}"}

    @app.post("/v1/segment", response_model=SegmentResponse, dependencies=[Depends(_auth)],
              openapi_extra=_doc((SegmentBySource, SegmentByEmbedding), SegmentForm),
              responses=_responses(*_POST_ERRORS), summary="clicks/box -> masks")
    async def segment(self, request: Request):
        body, files = await _body(request, _segment_model, SegmentForm)
        name, key, rgb = body.segmenter, None, None
        if isinstance(body, SegmentByEmbedding):
            name, _, key = body.embedding.rpartition(":")
            if not name or not _HASH.match(key):
                raise InvalidOptionError(f"not an embedding handle: {body.embedding[:80]!r}")
        else:
            image = await _photo(body, files)
            rgb, key = image.rgb, image.hash
        out_size = (body.width, body.height) if body.width and body.height else None
        out = await self._call(self.segmenter.segment, name, body.request.model_dump(), rgb, key,
                               out_size, True, photo=key)
        return {"width": out["width"], "height": out["height"], "best": out["best"],
                "scores": out["scores"], "embedding": f"{name}:{key}", "embedded": out["embedded"],
                "masks": [base64.b64encode(m).decode() for m in out["masks"]]}

    @app.post("/v1/replace", response_model=ReplaceResponse, dependencies=[Depends(_auth)],
              openapi_extra=_doc((ReplaceJson,), ReplaceForm), responses=_responses(*_POST_ERRORS, 409),
              summary="photo or history source + a RunSpec -> a recorded run and its outputs")
    async def replace(self, request: Request):
        body, files = await _body(request, ReplaceJson, ReplaceForm)
        spec: RunSpec = body.spec
        if spec.background.kind == "image":
            raise InvalidOptionError("an image background names a file on the server; it is not "
                                     "available through the API")
        subject = spec.subject
        if "mask" not in files:
            if not subject.clicks and subject.box is None:
                raise InvalidOptionError("no subject given: click on the subject, draw a box, or pass a mask")
            if not subject.segmenter:
                raise InvalidOptionError("no segmenter chosen for the clicks")
        # the photo is decoded (and the subject found) in the inpainter's replica, not here
        key = await run_in_threadpool(_reuse_key, body, files)
        result = await self._call(self.inpainter.run, files.get("photo"), getattr(body, "source", None),
                                  files.get("mask"), spec.to_json(), body.source_name, body.reuse,
                                  photo=key)
        self.retried += result.pop("retried", 0)
        result["outputs"] = [{**o, "url": _file_url(request, o["hash"])} for o in result["outputs"]]
        return result

    @app.get("/v1/runs", dependencies=[Depends(_auth)], summary="history, newest first",
             response_model=RunsPage, responses=_responses(*_GET_ERRORS))
    async def runs(self, request: Request,
                   q: str = Query("", max_length=500, description="words of the prompt"),
                   favorites: bool = False, model: Optional[str] = Query(None, max_length=500),
                   background: Optional[Literal[KINDS]] = Query(None, description="background kind"),
                   status: Optional[Literal["running", "succeeded", "failed", "cancelled"]] = None,
                   source: Optional[str] = Query(None, pattern=HASH, description="source photo hash"),
                   since: Annotated[When, Query(description="runs created at or after (RFC 3339, "
                                                             "with offset)")] = None,
                   until: Annotated[When, Query(description="runs created before (RFC 3339, with "
                                                             "offset)")] = None,
                   limit: int = Query(48, ge=1, le=MAX_PAGE),
                   cursor: Optional[str] = Query(None, pattern=CURSOR,
                                                 description="next_cursor of the previous page"),
                   offset: int = Query(0, ge=0, le=10**9), total: bool = False):
        from core.history import RunQuery
        query = RunQuery(text=q, favorites=favorites, model=model, background_kind=background,
                         status=status, since=since, until=until, source_hash=source)

        def read():
            store = _store()
            page = store.list_runs(query, limit=limit, cursor=cursor, offset=offset)
            return page, (store.count_runs(query) if total else None)

        page, count = await run_in_threadpool(read)
        return {"runs": [_run_json(request, r) for r in page.runs], "next_cursor": page.next_cursor,
                "total": count}

    @app.get("/v1/runs/{run_id}", dependencies=[Depends(_auth)], summary="one run",
             response_model=RunOut, responses=_responses(*_GET_ERRORS, 404))
    async def run(self, request: Request, run_id: int = Path(ge=1, le=MAX_ID)):
        record = await run_in_threadpool(lambda: _store().get_run(run_id))
        return _run_json(request, record)

    @app.get("/v1/files/{digest}", dependencies=[Depends(_auth)], summary="a stored image",
             response_class=Response,
             responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                                          "image/webp": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "the PNG, or with thumb=true the WebP thumbnail"},
                        **_responses(*_GET_ERRORS, 404)})
    async def file(self, digest: str = Path(pattern=HASH, description="the file's content hash"),
                   thumb: bool = False):
        from core.service.photos import blob_bytes
        blob = await run_in_threadpool(lambda: blob_bytes(_store(), digest, thumb))
        if blob is None:
            raise HttpError(404, f"no file with hash {digest[:12]}… in the image store")
        return Response(blob, media_type="image/webp" if thumb else "image/png",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})
