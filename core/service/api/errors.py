"""The HTTP API's errors and access: every error is JSON {"error": "<one line>"} with the status
core.errors' class maps to (header X-Backdrop-Error names the class); the bearer token check and
the cross-site refusal; what each status means in the OpenAPI document."""
# (no `from __future__ import annotations`: FastAPI reads the dependency's annotations)

import hmac
import logging
from typing import Any, Optional
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (BackdropError, CancelledError, DownloadError, HistoryError, ImageError,
                         InvalidOptionError, MissingWeightsError, OutOfMemoryError)
from core.service.api.bodies import ErrorBody
from core.service.deployments import ReplicaLost, hide_paths
from core.service.photos import NotFound
from core.spec import one_line

log = logging.getLogger("backdrop.service")

# Set by the ingress (Api.__init__) from the ServiceConfig; the routes' dependencies read it here.
ACCESS: dict[str, Any] = {"token": None, "max_upload_bytes": 64 * 2**20}
bearer = HTTPBearer(auto_error=False, description="BACKDROP_API_TOKEN, when the service sets one")


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
POST_ERRORS = (400, 401, 403, 404, 413, 415, 422, 500, 503)
GET_ERRORS = (401, 422, 500, 503)


def responses(*codes: int) -> dict:
    """FastAPI `responses=`: each status an operation can answer, with the error body's schema."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in sorted(codes)}


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


def install_handlers(app: FastAPI) -> None:
    """Answer every error of `app` with the one-line JSON body."""
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


def auth(request: Request, creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
    _same_site(request)
    token = ACCESS.get("token")
    if not token:
        return
    if creds is None:
        raise HttpError(401, "this service needs a bearer token: send Authorization: Bearer <token>",
                        {"WWW-Authenticate": "Bearer"})
    if not authorized(f"Bearer {creds.credentials}", token):
        raise HttpError(401, "the bearer token is not valid", {"WWW-Authenticate": "Bearer"})


def upload_limit() -> int:
    """The largest request body the service reads, in bytes (BACKDROP_API_MAX_UPLOAD_MB)."""
    return ACCESS["max_upload_bytes"]


def authorized(header: Optional[str], token: Optional[str]) -> bool:
    """Whether an Authorization header value passes for `token` (None = no auth required)."""
    if not token:
        return True
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
