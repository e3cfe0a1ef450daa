"""The HTTP API's body parser: one request body as JSON or as multipart/form-data (file parts as
sent, object fields as JSON text), counted against the upload limit while it streams, validated
into the route's pydantic model (one-line errors)."""
# (no `from __future__ import annotations`: the models' annotations are read at run time)

import json
from typing import Any, Optional

from fastapi import Request
from pydantic import BaseModel, ValidationError

from core.errors import InvalidOptionError
from core.service.api.errors import HttpError
from core.spec import one_line


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


def object_fields(model: type[BaseModel]) -> set[str]:
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


async def read_body(request: Request, json_model, form_model: type[BaseModel],
                    limit: int) -> tuple[BaseModel, dict[str, bytes]]:
    """(the validated body, {"photo": bytes, "mask": bytes} uploads) of a JSON or multipart request:
    JSON is validated with `json_model` (a model, or a function of the data choosing one), a
    multipart form with `form_model` (its bytes fields are the file parts); over `limit`
    bytes: 413."""
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
    objects, uploads = object_fields(form_model), file_fields(form_model)
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


def file_fields(model: type[BaseModel]) -> set[str]:
    import typing
    return {name for name, f in model.model_fields.items()
            if bytes in (f.annotation, *typing.get_args(f.annotation))}
