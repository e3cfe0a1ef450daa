"""The HTTP API: a FastAPI app served by the `Api` ingress deployment (versioned under /v1).

    POST /v1/embed          photo (upload or history source) -> embedding handle
    POST /v1/segment        photo, source or embedding handle + clicks/box -> masks (PNG, base64)
    POST /v1/replace        photo or source (+ mask upload) + a RunSpec -> run id and output hashes
    GET  /v1/runs           history, newest first: search, filters (batch=NAME too), cursor/offset paging
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
# Where it lives: bodies.py (request/response models), parse.py (the JSON-or-multipart parser),
# errors.py (error mapping, auth), openapi.py (the document); this file: the app and its routes.

import base64
import hashlib
import json
import logging
from typing import Annotated, Literal, Optional

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from ray import serve
from starlette.concurrency import run_in_threadpool

from core.errors import InvalidOptionError
from core.service.api.bodies import (CURSOR, HASH, HASH_RE, MAX_ID, MAX_PAGE, EmbedForm, EmbedJson,
                                     EmbedResponse, Health, ReplaceFields, ReplaceForm, ReplaceJson,
                                     ReplaceResponse, RunOut, RunsPage, SegmentByEmbedding,
                                     SegmentBySource, SegmentForm, SegmentResponse, When,
                                     segment_model)
from core.service.api.errors import (GET_ERRORS, POST_ERRORS, HttpError, auth, install_handlers,
                                     responses, upload_limit)
from core.service.api.openapi import document, request_doc
from core.service.api.parse import read_body
from core.service.config import ServiceConfig, apply_env
from core.service.deployments import call, hide_paths
from core.spec import KINDS, RunSpec

API_VERSION = "1"
log = logging.getLogger("backdrop.service")


# ---------------------------------------------------------------------------------------- app --
app = FastAPI(title="Backdrop API", version=API_VERSION,
              description="Replace photo backgrounds; every run is recorded in the shared history. "
                          "Errors are JSON {\"error\": \"<one line>\"}.")

app.openapi = lambda: document(app)
install_handlers(app)


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



def _reuse_key(body: "ReplaceFields", files: dict[str, bytes]) -> Optional[str]:
    """For a `reuse` request: a hash of everything it asks for, so a repeat goes to the inpainter
    replica that ran (or is running) the first one."""
    if not body.reuse:
        return None
    h = hashlib.sha256()
    for part in (files.get("photo") or (getattr(body, "source", None) or "").encode(), files.get("mask") or b"",
                 json.dumps(body.spec.to_json(), sort_keys=True).encode(), body.source_name.encode(),
                 (body.batch or "").encode()):
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
        import core.service.api.errors as module
        module.ACCESS.update(token=cfg.token, max_upload_bytes=cfg.max_upload_bytes)
        self.segmenter, self.inpainter = segmenter, inpainter
        self.retried = 0

    async def _call(self, method, *args, photo: Optional[str] = None):
        retried = [0]
        try:
            return await call(method, *args, photo=photo, retried=retried)
        finally:
            self.retried += retried[0]

    # -- routes ----------------------------------------------------------------------------------
    @app.get("/v1/health", summary="liveness; no token needed", responses=responses(500))
    async def health(self) -> Health:
        return {"ok": True, "version": API_VERSION, "retried": self.retried}

    @app.post("/v1/embed", response_model=EmbedResponse, dependencies=[Depends(auth)],
              openapi_extra=request_doc((EmbedJson,), EmbedForm), responses=responses(*POST_ERRORS),
              summary="photo -> embedding handle")
    async def embed(self, request: Request):
        body, files = await read_body(request, EmbedJson, EmbedForm, upload_limit())
        image = await _photo(body, files)
        out = await self._call(self.segmenter.embed, body.segmenter, image.rgb, photo=image.hash)
        return {**out, "embedding": f"{out['segmenter']}:{out['image']}"}

    @app.post("/v1/segment", response_model=SegmentResponse, dependencies=[Depends(auth)],
              openapi_extra=request_doc((SegmentBySource, SegmentByEmbedding), SegmentForm),
              responses=responses(*POST_ERRORS), summary="clicks/box -> masks")
    async def segment(self, request: Request):
        body, files = await read_body(request, segment_model, SegmentForm, upload_limit())
        name, key, rgb = body.segmenter, None, None
        if isinstance(body, SegmentByEmbedding):
            name, _, key = body.embedding.rpartition(":")
            if not name or not HASH_RE.match(key):
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

    @app.post("/v1/replace", response_model=ReplaceResponse, dependencies=[Depends(auth)],
              openapi_extra=request_doc((ReplaceJson,), ReplaceForm), responses=responses(*POST_ERRORS, 409),
              summary="photo or history source + a RunSpec -> a recorded run and its outputs")
    async def replace(self, request: Request):
        body, files = await read_body(request, ReplaceJson, ReplaceForm, upload_limit())
        spec: RunSpec = body.spec
        if spec.background.kind == "image":
            raise InvalidOptionError("an image background names a file on the server; it is not "
                                     "available through the API")
        subject = spec.subject
        if "mask" not in files and not subject.auto:      # subject.auto: found in the replica
            if not subject.clicks and subject.box is None:
                raise InvalidOptionError("no subject given: click on the subject, draw a box, or pass a mask")
            if not subject.segmenter:
                raise InvalidOptionError("no segmenter chosen for the clicks")
        # the photo is decoded (and the subject found) in the inpainter's replica, not here
        key = await run_in_threadpool(_reuse_key, body, files)
        result = await self._call(self.inpainter.run, files.get("photo"), getattr(body, "source", None),
                                  files.get("mask"), spec.to_json(), body.source_name, body.reuse,
                                  body.batch or None, photo=key)
        self.retried += result.pop("retried", 0)
        result["outputs"] = [{**o, "url": _file_url(request, o["hash"])} for o in result["outputs"]]
        return result

    @app.get("/v1/runs", dependencies=[Depends(auth)], summary="history, newest first",
             response_model=RunsPage, responses=responses(*GET_ERRORS))
    async def runs(self, request: Request,
                   q: str = Query("", max_length=500, description="words of the prompt"),
                   favorites: bool = False, model: Optional[str] = Query(None, max_length=500),
                   background: Optional[Literal[KINDS]] = Query(None, description="background kind"),
                   status: Optional[Literal["running", "succeeded", "failed", "cancelled"]] = None,
                   source: Optional[str] = Query(None, pattern=HASH, description="source photo hash"),
                   batch: Optional[str] = Query(None, max_length=500,
                                                description="runs of this batch only (its name)"),
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
                         status=status, since=since, until=until, source_hash=source, batch=batch)

        def read():
            store = _store()
            page = store.list_runs(query, limit=limit, cursor=cursor, offset=offset)
            return page, (store.count_runs(query) if total else None)

        page, count = await run_in_threadpool(read)
        return {"runs": [_run_json(request, r) for r in page.runs], "next_cursor": page.next_cursor,
                "total": count}

    @app.get("/v1/runs/{run_id}", dependencies=[Depends(auth)], summary="one run",
             response_model=RunOut, responses=responses(*GET_ERRORS, 404))
    async def run(self, request: Request, run_id: int = Path(ge=1, le=MAX_ID)):
        record = await run_in_threadpool(lambda: _store().get_run(run_id))
        return _run_json(request, record)

    @app.get("/v1/files/{digest}", dependencies=[Depends(auth)], summary="a stored image",
             response_class=Response,
             responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                                          "image/webp": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "the PNG, or with thumb=true the WebP thumbnail"},
                        **responses(*GET_ERRORS, 404)})
    async def file(self, digest: str = Path(pattern=HASH, description="the file's content hash"),
                   thumb: bool = False):
        from core.service.photos import blob_bytes
        blob = await run_in_threadpool(lambda: blob_bytes(_store(), digest, thumb))
        if blob is None:
            raise HttpError(404, f"no file with hash {digest[:12]}… in the image store")
        return Response(blob, media_type="image/webp" if thumb else "image/png",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})
