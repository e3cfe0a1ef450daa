"""Experiment history: every run, its parameters and its images, in a database + content-addressed files.

Never imports torch (the History page must load fast). Storage:

    database   config.database_url()  (BACKDROP_DATABASE_URL, default sqlite:///<data dir>/history.db;
               SQLite gets WAL, foreign_keys=ON, busy_timeout=30000, synchronous=NORMAL).
               PostgreSQL for a team: postgresql+psycopg://user:password@host/db (pip install
               'psycopg[binary]'; an empty database is migrated on first open, safely from several
               processes at once); writers take a per-database advisory lock, so writes go one
               at a time as on SQLite; a write cut by a lost connection (server restart) is
               retried on a new one and recorded exactly once, or fails with one HistoryError line
               (writes.py, retry). Schema = Alembic revisions in
               core/history/migrations/, applied automatically when a store opens.
    files      config.data_dir() (BACKDROP_DATA_DIR): images/ab/<hash>.png (sources, masks,
               outputs; hash = core.images.content_hash of the array, so each image is stored once)
               and thumbs/ab/<hash>.webp (long side 256). Files are written (temp + atomic rename)
               BEFORE the row that points at them is committed. refs/<store id>/ab/<hash> records
               which database uses which image: several databases may share one data dir, and
               an image is deleted only when no database claims it (core/history/blobs/).
               Or elsewhere: BACKDROP_BLOB_URL (config.blob_url()) = another folder (a mounted
               network filesystem works as is) or s3://bucket/prefix (S3-compatible storage, boto3;
               endpoint BACKDROP_S3_ENDPOINT_URL or AWS_ENDPOINT_URL, the usual AWS_* credentials):
               the same layout as object keys, each image uploaded once (HEAD, then a PUT with
               If-None-Match: *); an upload that fails raises HistoryError before any row is written.

API (all records are frozen dataclasses; paths in records are absolute Paths, or s3:// URL strings
when the images are in S3: read them with store.read_file, never by opening the path):

    open_store(url=None, data_dir=None, *, sweep=False, blob_url=None) -> HistoryStore
        One store per (process, url, data dir); the first open migrates and runs recover_runs();
        sweep=True (writers: jobs, the app server) also sweeps files. Read-only use never deletes.

    HistoryStore
      start_run(*, source, spec, source_name="", device=None, created=None,
                batch=None) -> int  # "running"
          source: HxWx3 uint8 array | object with .rgb/.hash (LoadedImage) | hash of a stored source
          spec: core.spec.RunSpec (or its JSON): every parameter, stored as JSON with its version;
                background_kind, model and search_text are indexed columns derived from it
          source_name: display only, never a path (nor a batch: a "/" in it means nothing)
          batch: the name of the batch the run is part of (core.batch), None for one photo (the
                 indexed column batch)
      finish_run(run_id, *, mask=None, outputs=(), timings=None, device=None, duration=None,
                 status="succeeded") -> None
          mask: HxW uint8 (255 = subject); outputs: arrays (HxWx3 or HxWx4 uint8) or (array, seed)
      fail_run(run_id, error, *, status="failed"|"cancelled", timings=None, device=None, mask=None)
      record_run(*, source, mask=None, outputs=(), timings=None, status="succeeded", error=None,
                 duration=None, created=None, spec, source_name="", device=None,
                 batch=None) -> int  # one tx
      get_run(run_id) -> RunRecord              get_runs(ids) -> list[RunRecord]
      list_runs(query: RunQuery | None = None, *, limit=48, cursor=None, offset=0) -> Page
          newest first; Page.runs (also iterable), Page.next_cursor (opaque str, None at the end)
      iter_runs(query=None) -> Iterator[RunRecord]
      count_runs(query=None) -> int
      compare(ids) -> Comparison(ids, params: {key: (value per run)}, differing: (keys,))
      facets() -> {"model": [...], "background_kind": [...], "status": [...]}
      batches() -> [(batch name, number of runs)]  # the batch run most recently first
      set_favorite(output_id, favorite=True) -> None
      delete_run(run_id) -> int                 # files removed (only those no row of any
                                                # database sharing the data dir still claims)
      recover_runs(stale_after_s=86400) -> int  # "running" rows of dead
          processes -> failed, error "process stopped: …" (the History page calls it on each view)
      read_file(path) -> bytes                  # a record's path/thumb_path, through the store
                                                # (folder or S3); HistoryError when missing
      has_file(path) -> bool                    read_files(paths) -> [bytes | None]  (concurrent)
      sweep(grace_s=None, stale_after_s=86400) -> SweepReport(interrupted, removed_files,
                                                              removed_bytes, missing_files)
          grace_s default 3600 (BACKDROP_SWEEP_GRACE_S): claims used more recently are kept

    RunQuery(text="", favorites=False, model=None, background_kind=None, status=None,
             since=None, until=None, source_hash=None, batch=None)
    RunRecord: id, created (aware UTC), finished, status, source: SourceRecord, source_name
        (core.batch's runs: "<batch name>/<file name>"), batch (its name, None for one photo),
        spec: RunSpec, timings, device, error, duration, mask: MaskRecord | None,
        outputs: tuple[OutputRecord, ...]
        .favorite (any output is), .prompt (None
        unless painted), .params() (spec.flat() + source, device, status, output seeds: what
        compare uses), .summary() (short JSON row for `history list --json`), .to_dict()
        (everything, JSON-ready)
    OutputRecord: id, run_id, index, seed, favorite, hash, width, height, path, thumb_path

Files: store.py (opening, identity, sessions), writes.py, queries.py, sweep.py, records.py (the
records below), models.py (ORM), blobs/ (image files and claims), db.py (engines, migrations),
identity.py (store ids: a copied database gets its own; `history store` lists and forgets ids).

Export: core.export.export_runs(out_zip, run_ids=None, *, favorites=False, store=None)
    -> ExportResult(path, runs, outputs, masks); export_zip(store, out, *, run_ids=None,
    favorites=False) -> (path, n_outputs) is the same for the CLI.

Example (what core.jobs does)::

    from core.history import open_store
    store = open_store()
    spec = RunSpec(subject=Subject(clicks=[Click(120, 80)], segmenter="sam-vit-b"),
                   mask=MaskOptions(grow=4), background="sd",
                   generation=Generation(prompt="a beach at sunset", seed=123, model="sd15-inpainting"))
    run_id = store.start_run(source=loaded_image, spec=spec)
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

from core.history.records import (Comparison, MaskRecord, OutputRecord, Page, RunQuery, RunRecord,
                                  SourceRecord, SweepReport)
from core.history.store import HistoryStore, open_store

__all__ = ["open_store", "HistoryStore", "RunQuery", "RunRecord", "OutputRecord", "SourceRecord",
           "MaskRecord", "Page", "Comparison", "SweepReport"]
