"""Batch: the same background replacement for every photo of a folder.

    report = run_batch(Path("in"), Path("out"), spec, subject=BatchSubject(rel_points=((0.5, 0.5, 1),)))
    report.done, report.skipped, report.failed        # names; failed = [(name, one line)]

Each photo is one run (core.jobs.run_job), recorded in history like any other run, its
`source_name` = "<batch name>/<file name>" so the History page's search finds the whole batch. The
subject of each photo comes from a mask folder (a mask with the photo's file stem), a box, or clicks
given as fractions of the image size (so one set of clicks fits photos of any size).

Resumable: a photo whose output file exists is skipped (outputs are written atomically, so an
output that exists is complete). A photo that cannot be read or run is reported with one line and
the rest go on. Outputs never replace an input, a non-regular file or the history's own files.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from core.errors import BackdropError, InvalidOptionError
from core.spec import RunSpec, Subject

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif",
                  ".avif")
MASK_SUFFIXES = (".png", ".webp", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass(frozen=True)
class BatchSubject:
    """Where each photo's subject comes from: `masks` (a folder with one mask per photo, same file
    stem, white = subject), `rel_points` ((fx, fy, label), fractions 0..1 of width/height) and/or
    `rel_box` ((fx1, fy1, fx2, fy2), fractions), given to `segmenter`."""
    masks: Optional[Path] = None
    rel_points: tuple[tuple[float, float, int], ...] = ()
    rel_box: Optional[tuple[float, float, float, float]] = None
    segmenter: Optional[str] = None

    def __post_init__(self):
        if self.masks is None and not self.rel_points and self.rel_box is None:
            raise InvalidOptionError("give each photo's subject: --masks DIR, --rel-point FX,FY or "
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
        return Subject(clicks=clicks, box=box, segmenter=self.segmenter)


@dataclass
class BatchReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)          # output already there
    failed: list[tuple[str, str]] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)


def photos(folder: Path) -> list[Path]:
    """The photos of `folder` (not recursive, hidden files left out), sorted by name."""
    if not folder.is_dir():
        raise InvalidOptionError(f"not a folder: {folder.name}")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in PHOTO_SUFFIXES)


def output_path(out_dir: Path, photo: Path, spec: RunSpec, suffix: Optional[str] = None) -> Path:
    """OUT_DIR/<photo stem>.<suffix>: .png by default (needed for transparent), else as given."""
    return out_dir / f"{photo.stem}{suffix or '.png'}"


def _mask_for(subject: BatchSubject, photo: Path) -> Path:
    for suffix in MASK_SUFFIXES:
        candidate = subject.masks / f"{photo.stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise InvalidOptionError(f"no mask for {photo.name} in the mask folder (want {photo.stem}.png)")


def run_batch(in_dir: Path, out_dir: Path, spec: RunSpec, subject: BatchSubject, *,
              name: Optional[str] = None, suffix: Optional[str] = None, record: bool = True,
              check_output: Optional[Callable[[Path, Path], None]] = None,
              progress: Optional[Callable[[str, int, int], None]] = None,
              cancel: Optional[threading.Event] = None, workers: Optional[int] = None) -> BatchReport:
    """Run `spec` (its subject replaced per photo) on every photo of `in_dir`, writing
    OUT_DIR/<stem>.png. `check_output(path, photo)` may refuse an output (raise BackdropError).
    `progress(name, i, total)` is called as each photo starts. KeyboardInterrupt / `cancel` stop
    between photos; what is done stays done.

    With BACKDROP_SERVER_URL set (team mode) each photo is a request to the service (which records
    the run), `workers` (default 8) at a time, so the batch spreads over the service's replicas;
    in-process, photos run one after another unless `workers` says otherwise."""
    from core import config

    if suffix == ".jpg" and spec.background.kind == "transparent":
        raise InvalidOptionError("a transparent background needs .png or .webp outputs")
    items = photos(in_dir)
    if not items:
        raise InvalidOptionError(f"no photos in {in_dir.name} ({', '.join(PHOTO_SUFFIXES[:4])}, …)")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or in_dir.name
    report = BatchReport()
    remote = bool(config.server_url())
    client = None
    if remote:
        from core.service.client import ServiceClient
        client = ServiceClient()
    started = [0]
    lock = threading.Lock()

    def one(photo: Path) -> None:
        if cancel is not None and cancel.is_set():
            return
        with lock:
            if progress is not None:
                progress(photo.name, started[0], len(items))
            started[0] += 1
        out = output_path(out_dir, photo, spec, suffix)
        if out.exists():
            with lock:
                report.skipped.append(photo.name)
            return
        try:
            run_id = _one(photo, out, spec, subject, name, record, check_output, cancel, client)
        except BackdropError as e:
            with lock:
                report.failed.append((photo.name, str(e)))
            return
        with lock:
            report.done.append(photo.name)
            if run_id is not None:
                report.run_ids.append(run_id)

    try:
        n = workers or (8 if remote else 1)
        if n == 1:
            for photo in items:
                one(photo)
        else:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(one, items))
    finally:
        if client is not None:
            client.close()
    report.done.sort()
    report.skipped.sort()
    report.failed.sort()
    return report


def _one(photo: Path, out: Path, spec: RunSpec, subject: BatchSubject, name: str, record: bool,
         check_output, cancel, client) -> Optional[int]:
    """One photo: its subject, the run (here or on the service), the output file(s); the run id."""
    from core.images import load_image, load_mask, save_image
    from core.jobs import JobRequest, run_job

    if check_output is not None:
        check_output(out, photo)
    image = load_image(photo)
    mask = None
    if subject.masks is not None:
        mask = load_mask(_mask_for(subject, photo), image)
        run_spec = spec.replace(subject=Subject())
    else:
        run_spec = spec.replace(subject=subject.for_image(image.width, image.height))
    if client is not None:
        import io

        import numpy as np
        from PIL import Image
        result = client.replace(run_spec, photo=photo.read_bytes(), mask=mask,
                                source_name=f"{name}/{photo.name}")
        outputs = [np.asarray(Image.open(io.BytesIO(client.file(o["hash"])))) for o in result["outputs"]]
        run_id = result["run_id"]
    else:
        result = run_job(JobRequest(image=image, spec=run_spec, mask=mask,
                                    source_name=f"{name}/{photo.name}"), record=record, cancel=cancel)
        outputs, run_id = result.outputs, result.run_id
    # extra variants first: the first output's file existing means the photo is done
    for k, extra in enumerate(outputs[1:], start=2):
        save_image(extra, out.with_name(f"{out.stem}-{k}{out.suffix}"))
    save_image(outputs[0], out)
    return run_id
