"""The HTTP API's bodies: request models (JSON and multipart forms) and response models, the
segmenter and model names a request may give, the query date type. pydantic models; the OpenAPI
document is made from them (core/service/api/openapi.py)."""
# (no `from __future__ import annotations`: FastAPI and pydantic read these annotations)

import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from core import config, weights
from core.images import MAX_PIXELS
from core.segment.types import SegmentRequest
from core.spec import RunSpec

HASH = r"^[0-9a-f]{64}$"
HASH_RE = re.compile(HASH)
MAX_PAGE = 200
CURSOR = r"^[0-9]{1,16}-[0-9]{1,18}$"     # core.history.records.encode_cursor
MAX_ID = 2**63 - 1        # the largest run id a history database can hold (BIGINT)


# ------------------------------------------------------------------------------- request models --
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def segmenters() -> list[str]:
    """The segmenter names a request may give: those of the weights registry whose files this
    service has (GrabCut needs none), and its default (BACKDROP_SEGMENTER; a 503 saying which
    file is missing when it has not been downloaded)."""
    names = [s.name for s in weights.specs("segment") if weights.is_present(s)]
    default = config.default_segmenter()
    return names if default in names else [*names, default]


def _known_segmenter(name: str) -> str:
    names = segmenters()
    if name not in names:
        raise ValueError(f"unknown segmenter {name[:80]!r} on this service; available: "
                         f"{', '.join(names)}")
    return name


Segmenter = Annotated[str, AfterValidator(_known_segmenter), Field(
    max_length=200, description="segmentation model (one this service has the weights of)",
    json_schema_extra=lambda js: js.update(enum=segmenters()))]
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


def inpaint_models() -> list[str]:
    """The inpainting models a request may name: those of the weights registry this service has,
    and its default (BACKDROP_INPAINT_MODEL; a 503 saying which file is missing when it has not
    been downloaded). Never a file, folder or Hugging Face repo id over the API."""
    names = [s.name for s in weights.specs("inpaint") if weights.is_present(s)]
    default = config.default_inpaint_model()
    return names if default in names else [*names, default]


def _registry_model(spec: RunSpec) -> RunSpec:
    gen = spec.generation
    if gen is not None and gen.model not in inpaint_models():
        known = ", ".join(inpaint_models())
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


class ReplaceFields(_Body):
    spec: ApiSpec
    source_name: str = Field("", max_length=500, description="display name kept with the run "
                                                         "(only shown: a \"/\" in it is no batch)")
    batch: Optional[str] = Field(None, max_length=500, description="the batch this run is part of "
                                                                   "(`batch` sends its name); none "
                                                                   "for one photo")
    reuse: bool = Field(False, description="if this photo, subject mask, spec, source_name and batch already "
                                           "ran (or are running), answer with that run instead of "
                                           "running again (`batch` sends it, so a rerun after a kill "
                                           "records nothing twice)")


class ReplaceJson(ReplaceFields):
    """/v1/replace on a photo already in the history; the subject from the spec's clicks or box."""
    source: Hash


class ReplaceForm(ReplaceFields):
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
    auto_confidence: Optional[float] = Field(
        None, ge=0, le=1, description="with spec.subject.auto: how sure the subject found is, 0 to 1 "
                                      "(`batch --auto` lists the photos below --review-below for "
                                      "review); null when the subject was given")


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
    batch: Optional[str] = Field(None, description="the batch the run was part of (a `batch` run "
                                                   "sends it), null for one photo")
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


def segment_model(data: Any):
    return SegmentByEmbedding if isinstance(data, dict) and "embedding" in data else SegmentBySource



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
