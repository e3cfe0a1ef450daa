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
import hmac
import json
import logging
import re
from datetime import datetime
from typing import Any, Optional

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import config
from core.errors import (BackdropError, CancelledError, DownloadError, HistoryError, ImageError,
                         InvalidOptionError, MissingWeightsError, OutOfMemoryError)
from core.segment.types import SegmentRequest
from core.service.config import ServiceConfig, apply_env
from core.service.deployments import ReplicaLost, call
from core.service.photos import NotFound
from core.spec import RunSpec, one_line

log = logging.getLogger("backdrop.service")

API_VERSION = "1"
HASH = r"^[0-9a-f]{64}$"
_HASH = re.compile(HASH)
MAX_PAGE = 200


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
    width: Optional[int] = Field(None, ge=1, le=65535, description="masks at this size (default: the photo's)")
    height: Optional[int] = Field(None, ge=1, le=65535)


class ReplaceRequest(PhotoFrom):
    spec: RunSpec = Field(description="every parameter of the run (core/spec.py RunSpec)")
    source_name: str = Field("", max_length=500, description="display name kept with the run")


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
    # the body is the one line; the header names the class, so a client raises the same error
    return _error(status, str(e), {"X-Backdrop-Error": type(e).__name__})


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


def _auth(creds: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> None:
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


async def _body(request: Request, model: type[BaseModel]) -> tuple[BaseModel, dict[str, bytes]]:
    """(the validated body, {"photo": bytes, "mask": bytes} uploads) of a JSON or multipart request."""
    limit = _settings["max_upload_bytes"]
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise HttpError(413, f"the request is {int(length) / 2**20:.1f} MB; the limit is "
                             f"{limit / 2**20:.0f} MB (BACKDROP_API_MAX_UPLOAD_MB)")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    files: dict[str, bytes] = {}
    if kind == "multipart/form-data":
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
            else:
                text = str(value)
                if text[:1] in "{[":
                    try:
                        data[key] = json.loads(text)
                        continue
                    except ValueError:
                        raise HttpError(400, f"form field {key!r} is not valid JSON") from None
                data[key] = text
    elif kind in ("application/json", ""):
        raw = await request.body()
        if len(raw) > limit:
            raise HttpError(413, f"the request body is over {limit / 2**20:.0f} MB")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise HttpError(400, "the request body is not valid JSON") from None
    else:
        raise HttpError(415, f"send application/json or multipart/form-data, not {kind!r}")
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
    """A run for the API: its summary, spec and image hashes with URLs (never server paths)."""
    out = run.summary()
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
        result = await self._call(self.inpainter.run, files.get("photo"), body.source,
                                  files.get("mask"), spec.to_json(), body.source_name)
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
                   since: Optional[datetime] = None, until: Optional[datetime] = None,
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
    async def run(self, request: Request, run_id: int) -> dict:
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
