"""A small client of the service's HTTP API (httpx), for client mode, scripts and benchmarks.

    client = ServiceClient()                      # BACKDROP_SERVER_URL, BACKDROP_API_TOKEN
    out = client.replace(RunSpec(background="color:#00ff00", ...), photo=loaded_image, mask=mask)
    run = client.run(out["run_id"]); png = client.file(out["outputs"][0]["hash"])

Errors come back as the core.errors class the service raised (the X-Backdrop-Error header names
it) with the service's one line; a service that cannot be reached is a BackdropError too. Thread-safe
(one httpx.Client with a connection pool).
"""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

import core.errors as errors
from core.errors import BackdropError
from core.settings import settings

Photo = Union[bytes, str, os.PathLike, np.ndarray, Any]     # file bytes, a path, RGB array, LoadedImage


def _png(arr: np.ndarray) -> bytes:
    from core.images import encode_png
    return encode_png(np.ascontiguousarray(arr))


def _photo_bytes(photo: Photo) -> bytes:
    if isinstance(photo, (bytes, bytearray, memoryview)):
        return bytes(photo)
    if isinstance(photo, (str, os.PathLike)):
        return Path(photo).read_bytes()
    if isinstance(photo, np.ndarray):
        return _png(photo)
    rgb = getattr(photo, "rgb", None)          # a LoadedImage: its pixels (and alpha) as PNG
    if isinstance(rgb, np.ndarray):
        alpha = getattr(photo, "alpha", None)
        return _png(np.dstack([rgb, alpha]) if alpha is not None else rgb)
    raise errors.InvalidOptionError(f"a photo is file bytes, a path, an RGB array or a LoadedImage, "
                                    f"not {type(photo).__name__}")


def _without_credentials(url: str) -> str:
    """`url` with any user:password@ taken out (never shown in an error line or a page)."""
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _json(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


class ServiceClient:
    """The API at `url` (default BACKDROP_SERVER_URL) with bearer `token` (default
    BACKDROP_API_TOKEN). `timeout` in seconds per request."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *,
                 timeout: float = 600.0):
        import httpx

        self.url = (url or settings().server_url).rstrip("/")
        if not self.url:
            raise errors.InvalidOptionError("no service URL: set BACKDROP_SERVER_URL (e.g. http://gpu-box:8000)")
        self.display_url = _without_credentials(self.url)     # what messages show
        from core.service.config import clean_token
        token = clean_token(token if token is not None else settings().api_token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ServiceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs):
        import httpx
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise BackdropError(f"the Backdrop service at {self.display_url} did not answer in time") from None
        except httpx.HTTPError as e:
            raise BackdropError(f"cannot reach the Backdrop service at {self.display_url}: {e}") from None
        if r.status_code >= 400:
            try:
                line = r.json()["error"]
            except (ValueError, KeyError, TypeError):
                line = f"HTTP {r.status_code} from the Backdrop service"
            kind = getattr(errors, r.headers.get("x-backdrop-error", ""), None)
            if not (isinstance(kind, type) and issubclass(kind, BackdropError)):
                kind = {404: errors.HistoryError, 422: errors.InvalidOptionError}.get(r.status_code,
                                                                                      BackdropError)
            e = kind(line)
            e.status_code = r.status_code         # type: ignore[attr-defined]
            raise e
        return r

    def _post(self, path: str, body: dict, files: dict[str, bytes]):
        body = {k: v for k, v in body.items() if v is not None}
        if not files:
            return self._request("POST", path, json=body).json()
        data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
        return self._request("POST", path, data=data,
                             files={k: (f"{k}.bin", v, "application/octet-stream")
                                    for k, v in files.items()}).json()

    # -- the API ----------------------------------------------------------------------------------
    def health(self) -> dict:
        return self._request("GET", "/v1/health").json()

    def replace(self, spec: Any, *, photo: Optional[Photo] = None, source: Optional[str] = None,
                mask: Optional[Union[np.ndarray, bytes]] = None, source_name: str = "",
                reuse: bool = False, batch: Optional[str] = None) -> dict:
        """One run on the service: `spec` a core.spec.RunSpec (or its JSON dict); the photo as
        `photo` or a history `source` hash; `mask` (HxW uint8, 255 = subject) instead of the
        spec's clicks/box. `reuse`: the same photo, mask, spec, source_name and batch already run
        (or running) on the service is answered with that run instead of a new one. `batch`: the
        batch the run is part of (core.batch), None for one photo. Returns
        {"run_id", "status", "outputs": [{hash, seed, width, height, url}], "mask", "timings",
        "reused"}."""
        files = {}
        if photo is not None:
            files["photo"] = _photo_bytes(photo)
        if mask is not None:
            files["mask"] = mask if isinstance(mask, (bytes, bytearray)) else _png(np.asarray(mask))
        return self._post("/v1/replace", {"spec": _json(spec), "source": source,
                                          "source_name": source_name or None,
                                          "batch": batch or None,
                                          "reuse": True if reuse else None}, files)

    def embed(self, *, photo: Optional[Photo] = None, source: Optional[str] = None,
              segmenter: Optional[str] = None) -> dict:
        """The photo's embedding, computed once and kept by the service: {"embedding": handle, ...}."""
        files = {"photo": _photo_bytes(photo)} if photo is not None else {}
        return self._post("/v1/embed", {"source": source, "segmenter": segmenter}, files)

    def segment(self, request: Any, *, embedding: Optional[str] = None,
                photo: Optional[Photo] = None, source: Optional[str] = None,
                segmenter: Optional[str] = None, size: Optional[tuple[int, int]] = None) -> dict:
        """Masks for `request` (core.segment.SegmentRequest or its dict): {"masks": bool (N, H, W),
        "scores", "best", "embedding", "width", "height"}; `size` = (width, height) of the masks."""
        from PIL import Image

        files = {"photo": _photo_bytes(photo)} if photo is not None else {}
        body = {"request": _json(request), "embedding": embedding, "source": source,
                "segmenter": segmenter, "width": size[0] if size else None,
                "height": size[1] if size else None}
        out = self._post("/v1/segment", body, files)
        out["masks"] = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(m)))) > 127
                                 for m in out["masks"]])
        return out

    def runs(self, **query: Any) -> dict:
        """A page of history: q, favorites, model, background, status, source, batch, since,
        until, limit, cursor, offset, total (see GET /v1/runs)."""
        params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items()
                  if v is not None}
        return self._request("GET", "/v1/runs", params=params).json()

    def run(self, run_id: int) -> dict:
        return self._request("GET", f"/v1/runs/{int(run_id)}").json()

    def file(self, digest: str, *, thumb: bool = False) -> bytes:
        """A stored image's bytes (PNG, or the WebP thumbnail)."""
        return self._request("GET", f"/v1/files/{digest}",
                             params={"thumb": "true"} if thumb else None).content
