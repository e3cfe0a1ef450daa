"""Experiment history: every run, its parameters and its images, in a database + content-addressed files.

Never imports torch (the History page must load fast). Storage:

    database   config.database_url()  (BACKDROP_DATABASE_URL, default sqlite:///<data dir>/history.db;
               SQLite gets WAL, foreign_keys=ON, busy_timeout=30000, synchronous=NORMAL; any
               SQLAlchemy URL works). Schema = Alembic revisions in core/history/migrations/,
               applied automatically when a store opens.
    files      config.data_dir() (BACKDROP_DATA_DIR): images/ab/<hash>.png (sources, masks,
               outputs; hash = core.images.content_hash of the array, so each image is stored once)
               and thumbs/ab/<hash>.webp (long side 256). Files are written (temp + atomic rename)
               BEFORE the row that points at them is committed. refs/<store id>/ab/<hash> records
               which database uses which image: several databases may share one data dir, and
               an image is deleted only when no database claims it (core/history/blobs.py).

API (all records are frozen dataclasses; paths in records are absolute):

    open_store(url=None, data_dir=None, *, sweep=False) -> HistoryStore
        One store per (process, url, data dir); the first open migrates and runs recover_runs();
        sweep=True (writers: jobs, the app server) also sweeps files. Read-only use never deletes.

    HistoryStore
      start_run(*, source, source_name="", segmenter=None, clicks=(), box=None, mask_options=None,
                background="", prompt=None, negative=None, seed=None, steps=None, guidance=None,
                strength=None, scheduler=None, model=None, variants=1, device=None,
                created=None) -> int                                   # status "running"
          source: HxWx3 uint8 array | object with .rgb/.hash (LoadedImage) | hash of a stored source
          clicks: (x, y, label) tuples or Click objects; mask_options: dict or MaskOptions
      finish_run(run_id, *, mask=None, outputs=(), timings=None, device=None, duration=None,
                 status="succeeded") -> None
          mask: HxW uint8 (255 = subject); outputs: arrays (HxWx3 or HxWx4 uint8) or (array, seed)
      fail_run(run_id, error, *, status="failed"|"cancelled", timings=None, device=None, mask=None)
      record_run(*, source, mask=None, outputs=(), timings=None, status="succeeded", error=None,
                 duration=None, created=None, **same params as start_run) -> int   # one transaction
      get_run(run_id) -> RunRecord              get_runs(ids) -> list[RunRecord]
      list_runs(query: RunQuery | None = None, *, limit=48, cursor=None, offset=0) -> Page
          newest first; Page.runs (also iterable), Page.next_cursor (opaque str, None at the end)
      iter_runs(query=None) -> Iterator[RunRecord]
      count_runs(query=None) -> int
      compare(ids) -> Comparison(ids, params: {key: (value per run)}, differing: (keys,))
      facets() -> {"model": [...], "background_kind": [...], "status": [...]}
      set_favorite(output_id, favorite=True) -> None
      delete_run(run_id) -> int                 # files removed (only those no row of any
                                                # database sharing the data dir still claims)
      recover_runs(stale_after_s=86400) -> int  # "running" rows of dead
          processes -> failed, error "process stopped: …" (the History page calls it on each view)
      sweep(grace_s=None, stale_after_s=86400) -> SweepReport(interrupted, removed_files,
                                                              removed_bytes, missing_files)
          grace_s default 3600 (BACKDROP_SWEEP_GRACE_S): claims used more recently are kept

    RunQuery(text="", favorites=False, model=None, background_kind=None, status=None,
             since=None, until=None, source_hash=None)
    RunRecord: id, created (aware UTC), finished, status, source: SourceRecord, source_name,
        segmenter, clicks, box, mask_options, background, background_kind, prompt, negative, seed,
        steps, guidance, strength, scheduler, model, variants, timings, device, error, duration,
        mask: MaskRecord | None, outputs: tuple[OutputRecord, ...]
        .favorite (any output is), .params() (what compare uses), .summary() (short JSON row for
        `history list --json`), .to_dict() (everything, JSON-ready)
    OutputRecord: id, run_id, index, seed, favorite, hash, width, height, path, thumb_path

Export: core.export.export_runs(out_zip, run_ids=None, *, favorites=False, store=None)
    -> ExportResult(path, runs, outputs, masks); export_zip(store, out, *, run_ids=None,
    favorites=False) -> (path, n_outputs) is the same for the CLI.

Example (what core.jobs does)::

    from core.history import open_store
    store = open_store()
    run_id = store.start_run(source=loaded_image, clicks=[(120, 80, 1)], background="sd",
                             prompt="a beach at sunset", seed=123, steps=30, guidance=7.5,
                             model="sd15-inpainting", mask_options={"grow": 4})
    try:
        ...  # segment, inpaint, compose
        store.finish_run(run_id, mask=mask, outputs=[(out, 123)], timings={"diffusion": 9.1},
                         device="cuda")
    except CancelledError as e:
        store.fail_run(run_id, str(e), status="cancelled")
    page = store.list_runs(RunQuery(text="sunset", favorites=True), limit=48)

Errors: database and file failures raise core.errors.HistoryError (one line); bad arguments raise
core.errors.InvalidOptionError. Text is stored as given except NUL characters, which are removed.
"""
from __future__ import annotations

from core.history.store import (Comparison, HistoryStore, MaskRecord, OutputRecord, Page, RunQuery,
                                RunRecord, SourceRecord, SweepReport, open_store)

__all__ = ["open_store", "HistoryStore", "RunQuery", "RunRecord", "OutputRecord", "SourceRecord",
           "MaskRecord", "Page", "Comparison", "SweepReport"]
