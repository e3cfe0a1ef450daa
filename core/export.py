"""Export runs from the history as a zip: output PNGs carrying an A1111-style `parameters` text chunk,
the masks, and manifest.json + manifest.csv (one row per output image). Images are read through
the history store (HistoryStore.read_file), so this works the same with the images in S3.

Zip layout (every name is built from ids and a slug limited to [a-z0-9-]; user text never becomes
a path)::

    outputs/run-000012-out-000034-a-beach-at-sunset.png
    masks/run-000012-mask.png
    manifest.json
    manifest.csv

The zip is written to a temp file next to OUT and renamed over it, so OUT is either the old file or
the complete new one.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from core import images
from core.errors import HistoryError, ImageError
from core.files import atomic_writer
from core.spec import a1111_parameters, flat_keys

SLUG_MAX = 40
# One row per output; the run's parameters are the run spec's flat() keys ("generation.prompt", ...).
MANIFEST_COLUMNS = ("run_id", "output_id", "file", "mask_file", "seed", *flat_keys(), "favorite",
                    "created", "width", "height", "source_hash", "status")
_SAFE_NAME = re.compile(r"^(outputs|masks)/[a-z0-9-]{1,120}\.png$")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    runs: int
    outputs: int
    masks: int


def slug(text: Optional[str], max_len: int = SLUG_MAX) -> str:
    """ASCII slug of `text` from [a-z0-9-], at most `max_len` characters; "" if nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode("ascii")
    s = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return s[:max_len].strip("-")


def parameters_text(run, output) -> str:
    """The A1111 "parameters" text of one output (core.spec.a1111_parameters)."""
    return a1111_parameters(run.spec, output.seed, (output.width, output.height))


def png_with_text(png: bytes, key: str, text: str) -> bytes:
    """`png` with a `key` text chunk after IHDR (pixels untouched), written by
    core.images.png_with_text: tEXt when the text is Latin-1, else iTXt (UTF-8)."""
    try:
        return images.png_with_text(png, {key: text})
    except ImageError as e:
        raise HistoryError("a stored output is not a PNG file; run a history sweep and try again") from e


def _csv_cell(v: Any) -> Any:
    """Defuse spreadsheet formulas in text cells (OWASP CSV injection); manifest.json is verbatim.
    Lists (clicks, box) are written as JSON."""
    if isinstance(v, (list, dict)):
        v = json.dumps(v, ensure_ascii=False)
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def _zip_time(dt: datetime) -> tuple[int, int, int, int, int, int]:
    dt = dt.astimezone(timezone.utc)
    return (max(dt.year, 1980), dt.month, dt.day, dt.hour, dt.minute, dt.second)


def export_runs(out: str | os.PathLike, run_ids: Optional[Sequence[int]] = None, *,
                favorites: bool = False, store=None) -> ExportResult:
    """Write a zip of runs to `out`.

    run_ids: those runs (HistoryError if one does not exist); None: every run in the history.
    favorites: keep only favourite outputs (with run_ids=None: all favourites in the history).
    Raises HistoryError when nothing is left to export."""
    from core.history import RunQuery, open_store

    store = store or open_store()
    if run_ids is not None:
        runs = store.get_runs(list(dict.fromkeys(int(i) for i in run_ids)))
    else:
        runs = list(store.iter_runs(RunQuery(favorites=favorites)))
    out = Path(out)

    entries: list[tuple[str, Callable[[], bytes], datetime]] = []   # read while writing
    rows: list[dict[str, Any]] = []
    masks = 0
    for run in runs:
        outputs = [o for o in run.outputs if o.favorite or not favorites]
        if not outputs:
            continue
        mask_name = ""
        if run.mask is not None:
            mask_name = f"masks/run-{run.id:06d}-mask.png"
            entries.append((mask_name, partial(store.read_file, run.mask.path), run.created))
            masks += 1
        words = slug(run.prompt) or slug(run.spec.background.kind) or "image"
        for o in outputs:
            name = f"outputs/run-{run.id:06d}-out-{o.id:06d}-{words}.png"
            entries.append((name, partial(_tagged_png, store, o.path, parameters_text(run, o)),
                            run.created))
            rows.append({
                "run_id": run.id, "output_id": o.id, "file": name, "mask_file": mask_name,
                "seed": o.seed, **run.spec.flat(), "favorite": o.favorite,
                "created": run.created.isoformat(), "width": o.width, "height": o.height,
                "source_hash": run.source.hash, "status": run.status})
    if not rows:
        what = "favourite outputs" if favorites else "output images"
        raise HistoryError(f"nothing to export: the chosen runs have no {what}")

    names = [n for n, _, _ in entries]
    if len(set(names)) != len(names) or not all(_SAFE_NAME.match(n) for n in names):
        raise HistoryError("internal error: unsafe or duplicate file names in the export")

    manifest = {"generator": "Backdrop", "version": 1,
                "exported": datetime.now(timezone.utc).isoformat(), "columns": list(MANIFEST_COLUMNS),
                "outputs": rows}
    csv_buf = io.StringIO()
    writer = csv.DictWriter(csv_buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in MANIFEST_COLUMNS})

    try:
        _write_zip(out, entries, manifest, csv_buf.getvalue())
    except OSError as e:
        raise HistoryError(f"cannot write {out}: {e.strerror or e}") from e
    return ExportResult(out, len({r["run_id"] for r in rows}), len(rows), masks)


def export_zip(store, out: str | os.PathLike, *, run_ids: Optional[Sequence[int]] = None,
               favorites: bool = False) -> tuple[Path, int]:
    """CLI convenience: export_runs(...) -> (zip path, number of output images)."""
    result = export_runs(out, run_ids, favorites=favorites, store=store)
    return result.path, result.outputs


def _write_zip(out: Path, entries, manifest: dict, csv_text: str) -> None:
    with atomic_writer(out) as f, zipfile.ZipFile(f, "w") as zf:
        for name, data, created in entries:   # PNGs are compressed already: store them
            zf.writestr(zipfile.ZipInfo(name, _zip_time(created)), data(),
                        compress_type=zipfile.ZIP_STORED)
        now = _zip_time(datetime.now(timezone.utc))
        zf.writestr(zipfile.ZipInfo("manifest.json", now),
                    json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8"),
                    compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(zipfile.ZipInfo("manifest.csv", now),
                    ("\ufeff" + csv_text).encode("utf-8"),
                    compress_type=zipfile.ZIP_DEFLATED)


def _tagged_png(store, path, text: str) -> bytes:
    """The stored PNG (read through the store: a folder or S3) with its parameters chunk."""
    return png_with_text(store.read_file(path), "parameters", text)
