"""Batch: the same background replacement for every photo of a folder.

    report = run_batch(Path("in"), Path("out"), spec, subject=BatchSubject(rel_points=((0.5, 0.5, 1),)))
    report.done, report.skipped, report.failed        # names; failed = [(name, one line)]

Each photo is one run (core.jobs.run_job), recorded in history like any other run, in the batch
`name` (default the photo folder's name; JobRequest.batch, the history's runs.batch column), its
`source_name` "<batch name>/<file name>": the History page's "Batch" filter,
`history list --batch NAME` and GET /v1/runs?batch=NAME list the batch's runs. The
subject of each photo comes from a mask folder (a mask with the photo's file stem), a box, or clicks
given as fractions of the image size (so one set of clicks fits photos of any size).

Every output name of the batch is decided before any work (`plan`): OUT_DIR/<stem><suffix>, and
<stem>-K<suffix> for variant K >= 2; photos whose stems are the same (ignoring case: a.jpg, a.png)
are told apart by their extension (a-jpg.png, a-png.png). Two outputs that would still share a name
(a.png's variant 2 and the photo a-2.png), an OUT_DIR that is the photo or mask folder, and an output
that is one of the inputs (photo, mask, background image; also through a link) are refused up front.

Resumable: after those checks, a photo whose first output exists is skipped (outputs are written
atomically and the extra variants first, so an output that exists is complete). A photo that cannot
be read or run is reported with one line and the rest go on.
"""
from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from core.errors import BackdropError, InvalidOptionError
from core.files import short
from core.spec import RunSpec, Subject

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif",
                  ".avif")
MASK_SUFFIXES = (".png", ".webp", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass(frozen=True)
class BatchSubject:
    """Where each photo's subject comes from: `masks` (a folder with one mask per photo, same file
    stem, white = subject), `rel_points` ((fx, fy, label), fractions 0..1 of width/height) and/or
    `rel_box` ((fx1, fy1, fx2, fy2), fractions), given to `segmenter`; `auto`: found without
    clicks in each photo (the points and box, if any, refine it)."""
    masks: Optional[Path] = None
    rel_points: tuple[tuple[float, float, int], ...] = ()
    rel_box: Optional[tuple[float, float, float, float]] = None
    segmenter: Optional[str] = None
    auto: bool = False

    def __post_init__(self):
        if self.masks is None and not self.rel_points and self.rel_box is None and not self.auto:
            raise InvalidOptionError("give each photo's subject: --auto, --masks DIR, --rel-point FX,FY or "
                                     "--rel-box FX1,FY1,FX2,FY2")
        values = [v for p in self.rel_points for v in p[:2]] + list(self.rel_box or ())
        if any(not 0.0 <= float(v) <= 1.0 for v in values):
            raise InvalidOptionError("relative points and boxes are fractions of the image size, "
                                     "from 0 to 1")

    def for_image(self, width: int, height: int) -> Subject:
        """The subject prompts in this image's pixels."""
        clicks = tuple((fx * (width - 1), fy * (height - 1), label) for fx, fy, label in self.rel_points)
        box = None
        if self.rel_box is not None:
            x1, y1, x2, y2 = self.rel_box
            box = (x1 * width, y1 * height, x2 * width, y2 * height)
        return Subject(clicks=clicks, box=box, segmenter=self.segmenter, auto=self.auto)


@dataclass
class BatchReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)          # output already there
    failed: list[tuple[str, str]] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)
    review: list[tuple[str, float]] = field(default_factory=list)   # auto confidence below the bar


def photos(folder: Path) -> list[Path]:
    """The photos of `folder` (not recursive, hidden files left out), sorted by name."""
    if not folder.is_dir():
        raise InvalidOptionError(f"not a folder: {folder.name}")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in PHOTO_SUFFIXES)


def plan(items: list[Path], out_dir: Path, suffix: str = ".png", variants: int = 1) -> dict[Path, list[Path]]:
    """Every photo's outputs, decided up front: [OUT_DIR/<stem><suffix>, <stem>-2<suffix>, …] (one
    per variant). Photos whose stems are the same ignoring case get their extension in the name
    (a.jpg, a.png -> a-jpg.png, a-png.png). Raises InvalidOptionError naming the clash if two outputs
    would still share a name ignoring case (e.g. a.png's variant 2 and the photo a-2.png)."""
    stems = Counter(p.stem.casefold() for p in items)
    outputs: dict[Path, list[Path]] = {}
    owner: dict[str, tuple[Path, int]] = {}
    for photo in items:
        stem = photo.stem if stems[photo.stem.casefold()] == 1 else f"{photo.stem}-{photo.suffix[1:]}"
        names = [f"{stem}{suffix}"] + [f"{stem}-{k}{suffix}" for k in range(2, variants + 1)]
        for k, file_name in enumerate(names, start=1):
            other = owner.setdefault(file_name.casefold(), (photo, k))
            if other != (photo, k):
                raise InvalidOptionError(
                    f"{_what(*other)} and {_what(photo, k)} would both be written to "
                    f"{short(file_name)}: rename one of the photos (or batch them separately)")
        outputs[photo] = [out_dir / n for n in names]
    return outputs


def _what(photo: Path, k: int) -> str:
    return f"the result of {short(photo.name)}" if k == 1 else f"variant {k} of {short(photo.name)}"


def _mask_for(subject: BatchSubject, photo: Path) -> Optional[Path]:
    for suffix in MASK_SUFFIXES:
        candidate = subject.masks / f"{photo.stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_folders(in_dir: Path, out_dir: Path, masks_dir: Optional[Path]) -> None:
    """Refuse an OUT_DIR that is not a folder, or is the photo or mask folder (also through a link)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidOptionError(f"--out {short(out_dir, 150)} is not a folder: give a folder for the "
                                 "results")
    for folder, what in ((in_dir, "photo folder"), (masks_dir, "mask folder")):
        if folder is not None and _same_folder(out_dir, folder):
            raise InvalidOptionError(f"--out {short(out_dir, 150)} is the {what}: choose another folder for "
                                     "the results")


def _check_inputs(outputs: dict[Path, list[Path]], inputs: list[Path]) -> None:
    """Refuse an output that is one of the inputs (the same file, also via a link or another name)."""
    by_id = {}
    for path in inputs:
        try:
            st = path.stat()
        except OSError:
            continue
        by_id[(st.st_dev, st.st_ino)] = path
    for paths in outputs.values():
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue
            clash = by_id.get((st.st_dev, st.st_ino))
            if clash is not None:
                raise InvalidOptionError(f"the output {short(path.name)} would replace the input "
                                         f"{short(clash.name)} (the same file): choose another folder "
                                         "for the results")


def run_batch(in_dir: Path, out_dir: Path, spec: RunSpec, subject: BatchSubject, *,
              name: Optional[str] = None, suffix: Optional[str] = None, record: bool = True,
              check_outputs: Optional[Callable[[list[Path]], None]] = None,
              progress: Optional[Callable[[str, int, int], None]] = None,
              cancel: Optional[threading.Event] = None, workers: Optional[int] = None,
              review_below: Optional[float] = None) -> BatchReport:
    """Run `spec` (its subject replaced per photo) on every photo of `in_dir`, writing the outputs
    `plan` gives. Before any work (and before OUT_DIR is created) the folders, names and inputs are
    checked (`_check_folders`, `plan`, `_check_inputs`) and `check_outputs(paths)` may refuse the
    outputs (raise BackdropError): a refusal raises, nothing is done. A photo whose first output
    exists is then skipped. `progress(name, i, total)` is called as each photo starts.
    KeyboardInterrupt / `cancel` stop between photos; what is done stays done.

    With BACKDROP_SERVER_URL set (team mode) each photo is a request to the service (which records
    the run), `workers` (default 8) at a time, so the batch spreads over the service's replicas;
    in-process, photos run one after another unless `workers` says otherwise.

    With `subject.auto` each photo's automatic-subject confidence is kept in OUT_DIR/review.json
    (written after each photo, so a killed batch's rerun keeps it); `report.review` lists the
    photos below `review_below` (default core.auto.REVIEW_BELOW), least sure first."""
    if review_below is None:
        from core.auto import REVIEW_BELOW as review_below
    suffix = suffix or ".png"
    if suffix == ".jpg" and spec.background.kind == "transparent":
        raise InvalidOptionError("a transparent background needs .png or .webp outputs")
    if subject.masks is not None and not subject.masks.is_dir():
        raise InvalidOptionError(f"mask folder not found: {short(subject.masks, 150)}")
    items = photos(in_dir)
    if not items:
        raise InvalidOptionError(f"no photos in {short(in_dir.name)} ({', '.join(PHOTO_SUFFIXES[:4])}, …)")
    _check_folders(in_dir, out_dir, subject.masks)
    variants = spec.generation.variants if spec.generation is not None else 1
    outputs = plan(items, out_dir, suffix, variants)
    masks = {p: _mask_for(subject, p) for p in items} if subject.masks is not None else {}
    if masks and not any(masks.values()):
        raise InvalidOptionError(f"no masks for these photos in {short(subject.masks, 150)} (want e.g. "
                                 f"{short(items[0].stem)}.png)")
    background = spec.background.path if spec.background.kind == "image" else None
    _check_inputs(outputs, [*items, *(m for m in masks.values() if m),
                            *([Path(background)] if background else [])])
    if check_outputs is not None:
        check_outputs([path for paths in outputs.values() for path in paths])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidOptionError(f"cannot create {short(out_dir, 150)}: {e.strerror or e}") from e
    name = name or in_dir.name
    report = BatchReport()
    from core.engine import get_engine
    engine = get_engine()          # in this process, or the service (BACKDROP_SERVER_URL)
    started = [0]
    lock = threading.Lock()
    review_file = out_dir / REVIEW_FILE
    sure = _read_review(review_file) if subject.auto else {}

    def one(photo: Path) -> None:
        if cancel is not None and cancel.is_set():
            return
        with lock:
            if progress is not None:
                progress(photo.name, started[0], len(items))
            started[0] += 1
        if outputs[photo][0].exists():
            with lock:
                report.skipped.append(photo.name)
            return
        try:
            if subject.masks is not None and masks[photo] is None:
                raise InvalidOptionError(f"no mask in the mask folder (want {short(photo.stem)}.png)")
            run_id, confidence = _one(photo, outputs[photo], masks.get(photo), spec, subject, name,
                                      record, cancel, engine)
        except BackdropError as e:
            with lock:
                report.failed.append((photo.name, str(e)))
            return
        with lock:
            report.done.append(photo.name)
            if run_id is not None:
                report.run_ids.append(run_id)
            if confidence is not None:
                sure[photo.name] = round(float(confidence), 4)
                _write_review(review_file, sure, review_below)

    n = workers or engine.parallel_runs
    if n == 1:
        for photo in items:
            one(photo)
    else:
        import contextvars
        from concurrent.futures import ThreadPoolExecutor
        caller = contextvars.copy_context()       # the caller's progress listeners reach each run
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda photo: caller.copy().run(one, photo), items))
    report.done.sort()
    report.skipped.sort()
    report.failed.sort()
    if subject.auto:
        names = {p.name for p in items}
        report.review = sorted(((n, c) for n, c in sure.items() if n in names and c < review_below),
                               key=lambda nc: (nc[1], nc[0]))
    return report


REVIEW_FILE = "review.json"


def _read_review(path: Path) -> dict[str, float]:
    """The confidences a previous (killed) run of this batch recorded; {} when none or unreadable."""
    import json
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in data.get("confidence", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _write_review(path: Path, sure: dict[str, float], below: float) -> None:
    """OUT_DIR/review.json: every photo's auto confidence and the ones to review (atomically)."""
    import json
    review = sorted((n for n, c in sure.items() if c < below), key=lambda n: (sure[n], n))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"review_below": below, "review": review,
                               "confidence": dict(sorted(sure.items()))}, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _one(photo: Path, outs: list[Path], mask_path: Optional[Path], spec: RunSpec, subject: BatchSubject,
         name: str, record: bool, cancel, engine) -> tuple[Optional[int], Optional[float]]:
    """One photo: its subject, the run (here or on the service), its planned output files; the run
    id and the automatic subject's confidence (None without --auto)."""
    from core.images import load_image, load_mask, save_image
    from core.jobs import JobRequest

    image = load_image(photo)
    mask = None
    if mask_path is not None:
        mask = load_mask(mask_path, image)
        run_spec = spec.replace(subject=Subject())
    else:
        run_spec = spec.replace(subject=subject.for_image(image.width, image.height))
    # reuse: a photo whose run the service already has (this batch was killed while it ran) is
    # not run or recorded again
    result = engine.run(JobRequest(image=image, spec=run_spec, mask=mask,
                                   source_name=f"{name}/{photo.name}", batch=name),
                        record=record, cancel=cancel,
                        original=photo.read_bytes(), reuse=True)
    outputs, run_id = result.outputs, result.run_id
    if len(outputs) != len(outs):
        raise BackdropError(f"the run gave {len(outputs)} outputs, {len(outs)} were expected")
    # extra variants first: the first output's file existing means the photo is done
    for image_k, path in list(zip(outputs, outs))[1:]:
        save_image(image_k, path)
    save_image(outputs[0], outs[0])
    return run_id, getattr(result, "auto_confidence", None)
