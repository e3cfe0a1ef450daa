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
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Optional
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
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
from core.spec import RunSpec, one_line

log = logging.getLogger("backdrop.service")

API_VERSION = "1"
HASH = r"^[0-9a-f]{64}$"
_HASH = re.compile(HASH)
MAX_PAGE = 200
MAX_ID = 2**63 - 1        # the largest run id a history database can hold (BIGINT)


# ------------------------------------------------------------------------------- request models --
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhotoFrom(_Body):
    source: Optional[str] = Field(None, pattern=HASH,
                                  description="content hash of a photo already in the history "
                                              "(instead of uploading file `photo`)")


class EmbedRequest(PhotoFrom):
    segmenter: str = Field(default_factory=config.default_segmenter, max_length=200,
                           description="segmentation model name")


class SegmentBody(PhotoFrom):
    segmenter: str = Field(default_factory=config.default_segmenter, max_length=200,
                           description="segmentation model name")
    embedding: Optional[str] = Field(None, max_length=300,
                                     description="handle from /v1/embed (instead of a photo)")
    request: SegmentRequest = Field(description="clicks and/or box, original pixels; multimask")
    width: Optional[int] = Field(None, ge=1, le=65535, description="masks at this size (default: the "
                                 "photo's); with height, at most the upload pixel cap")
    height: Optional[int] = Field(None, ge=1, le=65535)

    @model_validator(mode="after")
    def _size(self):
        if (self.width is None) != (self.height is None):
            raise ValueError("give the mask size as both width and height, or neither")
        if self.width and self.height and self.width * self.height > MAX_PIXELS:
            raise ValueError(f"masks of {self.width}x{self.height} would be "
                             f"{self.width * self.height / 1e6:.0f} MP; the limit is "
                             f"{MAX_PIXELS / 1e6:.0f} MP, as for uploaded photos")
        return self


class ReplaceRequest(PhotoFrom):
    spec: RunSpec = Field(description="every parameter of the run (core/spec.py RunSpec); "
                                      "generation.model must be a registry name")
    source_name: str = Field("", max_length=500, description="display name kept with the run")
    reuse: bool = Field(False, description="if this photo, subject mask, spec and source_name already "
                                           "ran (or are running), answer with that run instead of "
                                           "running again (`batch` sends it, so a rerun after a kill "
                                           "records nothing twice)")

    @model_validator(mode="after")
    def _registry_model(self):
        gen = self.spec.generation
        if gen is not None and ("inpaint", gen.model) not in weights.REGISTRY:
            known = ", ".join(s.name for s in weights.specs("inpaint"))
            raise ValueError(f"unknown inpainting model {gen.model[:80]!r}: the API takes a model name "
                             f"from the service's registry ({known}), never a file, folder or repo id")
        return self


class Upload(BaseModel):
    """multipart/form-data: the photo (and mask) as files, the other fields of the JSON body as
    form fields (objects as JSON text)."""
    photo: Optional[bytes] = Field(None, json_schema_extra={"format": "binary"},
                                   description="the photo: JPEG, PNG, WebP, TIFF, BMP, GIF or HEIC")
    mask: Optional[bytes] = Field(None, json_schema_extra={"format": "binary"},
                                  description="replace only: subject mask, same size, 255 = subject")


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


async def _body(request: Request, model: type[BaseModel]) -> tuple[BaseModel, dict[str, bytes]]:
    """(the validated body, {"photo": bytes, "mask": bytes} uploads) of a JSON or multipart request."""
    limit = _settings["max_upload_bytes"]
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise _too_large(limit, int(length))
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json", ""):
        raise HttpError(415, f"send application/json or multipart/form-data, not {kind[:80]!r}")
    raw = await _read(request, limit)
    files: dict[str, bytes] = {}
    if kind == "multipart/form-data":
        objects = _object_fields(model)
        try:
            form = await request.form(max_files=2, max_fields=20)
        except Exception as e:   # malformed multipart: starlette's own message, one line
            raise HttpError(400, f"could not read the multipart body: {getattr(e, 'detail', e)}") from None
        data: dict[str, Any] = {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                if key not in ("photo", "mask"):
                    raise HttpError(400, f"unexpected file field {key!r}: send the photo as 'photo' "
                                         "(and a subject mask as 'mask')")
                blob = await value.read()
                if len(blob) > limit:
                    raise HttpError(413, f"{key} is {len(blob) / 2**20:.1f} MB; the limit is "
                                         f"{limit / 2**20:.0f} MB (BACKDROP_API_MAX_UPLOAD_MB)")
                files[key] = blob
            elif key in objects:
                data[key] = _loads(str(value), f"form field {key!r}")
            else:
                data[key] = str(value)
    else:
        data = _loads(raw or b"{}", "the request body")
    return _validate(model, data), files


def _doc(model: type[BaseModel]) -> dict:
    """openapi_extra: the body may be JSON (`model`) or multipart (its fields + the uploads)."""
    name = model.__name__
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}},
        "multipart/form-data": {"schema": {"allOf": [
            {"$ref": f"#/components/schemas/{name}"}, {"$ref": "#/components/schemas/Upload"}]}}}}}


def _openapi() -> dict:
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (EmbedRequest, SegmentBody, ReplaceRequest, Upload):
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        comps.update(js.pop("$defs", {}))
        comps[model.__name__] = js
    app.openapi_schema = schema
    return schema


app.openapi = _openapi


# ------------------------------------------------------------------------------------- helpers --
def _store():
    from core.history import open_store
    return open_store()


async def _photo(body: PhotoFrom, files: dict[str, bytes]):
    from core.service import photos
    return await run_in_threadpool(photos.photo, files.get("photo"), body.source)


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


def _utc(value: Optional[datetime]) -> Optional[datetime]:
    """A query's date in UTC; one whose offset takes it past year 1 or 9999 is refused (422)."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("the date is out of range once taken to UTC") from None


When = Annotated[Optional[datetime], AfterValidator(_utc)]


def _reuse_key(body: "ReplaceRequest", files: dict[str, bytes]) -> Optional[str]:
    """For a `reuse` request: a hash of everything it asks for, so a repeat goes to the inpainter
    replica that ran (or is running) the first one."""
    if not body.reuse:
        return None
    h = hashlib.sha256()
    for part in (files.get("photo") or (body.source or "").encode(), files.get("mask") or b"",
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
    @app.get("/v1/health", summary="liveness; no token needed")
    async def health(self) -> dict:
        return {"ok": True, "version": API_VERSION, "retried": self.retried}

    @app.post("/v1/embed", response_model=EmbedResponse, dependencies=[Depends(_auth)],
              openapi_extra=_doc(EmbedRequest), summary="photo -> embedding handle")
    async def embed(self, request: Request):
        body, files = await _body(request, EmbedRequest)
        image = await _photo(body, files)
        out = await self._call(self.segmenter.embed, body.segmenter, image.rgb, photo=image.hash)
        return {**out, "embedding": f"{out['segmenter']}:{out['image']}"}

    @app.post("/v1/segment", response_model=SegmentResponse, dependencies=[Depends(_auth)],
              openapi_extra=_doc(SegmentBody), summary="clicks/box -> masks")
    async def segment(self, request: Request):
        body, files = await _body(request, SegmentBody)
        name, key, rgb = body.segmenter, None, None
        if body.embedding and ("photo" in files or body.source):
            raise InvalidOptionError("give either an embedding handle or a photo, not both")
        if body.embedding:
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
              openapi_extra=_doc(ReplaceRequest),
              summary="photo or history source + a RunSpec -> a recorded run and its outputs")
    async def replace(self, request: Request):
        body, files = await _body(request, ReplaceRequest)
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
        if "photo" in files and body.source:
            raise InvalidOptionError("give the photo either as an upload or as a history source, not both")
        # the photo is decoded (and the subject found) in the inpainter's replica, not here
        key = await run_in_threadpool(_reuse_key, body, files)
        result = await self._call(self.inpainter.run, files.get("photo"), body.source,
                                  files.get("mask"), spec.to_json(), body.source_name, body.reuse,
                                  photo=key)
        self.retried += result.pop("retried", 0)
        result["outputs"] = [{**o, "url": _file_url(request, o["hash"])} for o in result["outputs"]]
        return result

    @app.get("/v1/runs", dependencies=[Depends(_auth)], summary="history, newest first")
    async def runs(self, request: Request,
                   q: str = Query("", max_length=500, description="words of the prompt"),
                   favorites: bool = False, model: Optional[str] = Query(None, max_length=500),
                   background: Optional[str] = Query(None, description="background kind"),
                   status: Optional[str] = Query(None, description="running, succeeded, failed, cancelled"),
                   source: Optional[str] = Query(None, pattern=HASH, description="source photo hash"),
                   since: When = None, until: When = None,
                   limit: int = Query(48, ge=1, le=MAX_PAGE), cursor: Optional[str] = None,
                   offset: int = Query(0, ge=0, le=10**9), total: bool = False) -> dict:
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

    @app.get("/v1/runs/{run_id}", dependencies=[Depends(_auth)], summary="one run")
    async def run(self, request: Request, run_id: int = Path(ge=1, le=MAX_ID)) -> dict:
        record = await run_in_threadpool(lambda: _store().get_run(run_id))
        return _run_json(request, record)

    @app.get("/v1/files/{digest}", dependencies=[Depends(_auth)], summary="a stored image",
             response_class=Response,
             responses={200: {"content": {"image/png": {}, "image/webp": {}}}})
    async def file(self, digest: str, thumb: bool = False):
        if not _HASH.match(digest):
            raise HttpError(404, "not a file hash (64 lowercase hex digits)")
        from core.service.photos import blob_bytes
        blob = await run_in_threadpool(lambda: blob_bytes(_store(), digest, thumb))
        if blob is None:
            raise HttpError(404, f"no file with hash {digest[:12]}… in the image store")
        return Response(blob, media_type="image/webp" if thumb else "image/png",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})
