"""Command-line interface (the contract in docs/CONTRACTS.md, "core/jobs.py + core/cli.py").

Why ~680 lines: argparse wiring plus one short function per command; the catalogue flags live in
core/cli_catalogue.py and the work itself behind core.engine.

Exit 0 on success; on bad input exit 2 with one line `error: <what and why>` on stderr, never a
traceback. Images are written at the input's full (EXIF-corrected) size.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import threading
from pathlib import Path

from core import cli_catalogue, config
from core.engine import CAN_SKIP_HISTORY, get_engine
from core.errors import BackdropError, InvalidOptionError
from core.files import check_output, short, terminal_safe
from core.settings import settings
from core.spec import MODE_DEFAULTS, Generation, MaskOptions, RunSpec, Subject

MAX_ID = 2**63 - 1          # SQLite's (and PostgreSQL's BIGINT) largest integer
MAX_ERROR_CHARS = 300       # an error line never grows past this, whatever the user typed
CLI_METAVARS = {"edge": "hard|matte[:METHOD]", "edge_band": "PX"}     # else N, X or TEXT by type
CLI_DEFAULT_TEXT = {"edge_band": "auto: ~0.6 %% of the long side, at least 3 px"}   # what None means
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _error(message: object) -> None:
    """The one `error:` line on stderr: control characters escaped, long values cut."""
    print(f"error: {short(config.redact(message), MAX_ERROR_CHARS)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one `error:` line and exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        _error(message)
        raise SystemExit(2)


# ---------------------------------------------------------------- argument value parsers
def _point(text: str):
    from core.spec import Click
    parts = text.split(",")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad point {text!r}: expected X,Y or X,Y,LABEL (LABEL 1 = subject, 0 = not)")
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"bad point label {label}: use 1 (subject) or 0 (not subject)")
    return Click(x, y, label)


def _box(text: str):
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad box {text!r}: expected X1,Y1,X2,Y2")
    if x2 <= x1 or y2 <= y1:
        raise argparse.ArgumentTypeError(f"bad box {text!r}: X2 must be > X1 and Y2 > Y1")
    return (x1, y1, x2, y2)


def _ids(text: str) -> list[int]:
    parts = [v.strip() for v in text.split(",") if v.strip()]
    if not parts or not all(p.isdigit() and len(p) <= 19 for p in parts) \
            or not all(1 <= int(p) <= MAX_ID for p in parts):
        raise argparse.ArgumentTypeError(f"bad ids {short(text, 40)!r}: expected run ids from 1 to "
                                         f"{MAX_ID}, comma-separated, like 1,2,3")
    return [int(p) for p in parts]


def _whole(lo: int, hi: int):
    """An argparse type: a whole number from lo to hi (a value out of range is quoted cut short)."""
    def parse(text: str) -> int:
        t = text.strip()
        digits = t[1:] if t[:1] in "+-" else t
        if not digits.isdigit() or len(digits) > 20 or not lo <= int(t) <= hi:
            raise argparse.ArgumentTypeError(f"{short(text, 24)!r} is not a whole number from {lo} to {hi}")
        return int(t)
    return parse


def _integer(text: str) -> int:
    """An argparse type: a whole number (its range is the spec's to check)."""
    t = text.strip()
    digits = t[1:] if t[:1] in "+-" else t
    if not digits.isdigit() or len(digits) > 40:
        raise argparse.ArgumentTypeError(f"{short(text, 24)!r} is not a whole number")
    return int(t)


def _finite(text: str) -> float:
    """An argparse type: a finite number (its range is the spec's to check)."""
    try:
        v = float(text) if len(text) <= 40 else float("nan")
    except ValueError:
        v = float("nan")
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{short(text, 24)!r} is not a finite number")
    return v


def _spec_options(parser, model, skip: tuple[str, ...] = ()) -> None:
    """One --flag per field of a spec model, its help from the field's description. Flags default
    to None, so the spec's own default applies (the editor's and the API's too)."""
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        by_mode = {m: d[name] for m, d in MODE_DEFAULTS.items() if name in d}
        if field.is_required():
            default = "required"
        elif name == "mode":
            default = "fast without a CUDA GPU, else quality; BACKDROP_MODE"
        elif by_mode:
            default = ", ".join(f"{m} {v}" for m, v in by_mode.items())
        elif name in CLI_DEFAULT_TEXT:
            default = CLI_DEFAULT_TEXT[name]
        description = field.description.replace("%", "%%")       # argparse formats help with %
        help_text = f"{description} (default: {'none' if default is None else default})"
        kind = field.annotation
        text = str(kind)
        if kind is bool or "bool" in text:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=description)
        elif "int" in text:
            parser.add_argument(flag, dest=name, type=_integer, metavar=CLI_METAVARS.get(name, "N"),
                                help=help_text)
        elif "float" in text:
            parser.add_argument(flag, dest=name, type=_finite, metavar=CLI_METAVARS.get(name, "X"),
                                help=help_text)
        else:
            parser.add_argument(flag, dest=name, metavar=CLI_METAVARS.get(name, "TEXT"), help=help_text)


def _spec_values(args, model) -> dict:
    """The spec fields the user set on the command line (the spec's defaults fill in the rest)."""
    return {k: getattr(args, k) for k in model.model_fields if getattr(args, k, None) is not None}


def _protected() -> list[Path]:
    """What no output may be written over: the history database file and the image store."""
    from sqlalchemy.engine import make_url

    data = config.data_dir()
    paths = [data / "images", data / "thumbs", data / "refs"]
    blob_url = config.blob_url()
    if blob_url and "://" not in blob_url.replace("file://", ""):   # the image store in a folder
        from core.history.blobs import open_backend
        try:
            root = open_backend(blob_url, data).root
            paths += [root / "images", root / "thumbs", root / "refs"]
        except Exception:  # a bad setting is reported by the store itself
            pass
    try:
        url = make_url(config.database_url())
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            db = Path(url.database).expanduser()
            paths += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
                      db.with_name(db.name + "-journal")]
    except Exception:  # a malformed URL is reported by the store itself, with its own message
        pass
    return paths


def _check_outputs(paths, args, *inputs) -> None:
    """Refuse, before any work, outputs that would replace an input, a non-regular file or the
    history's own files (see core.files.check_output)."""
    for path in paths:
        check_output(path, inputs=[i for i in inputs if i], protected=_protected(),
                     overwrite=getattr(args, "overwrite", False))


# ---------------------------------------------------------------- commands
def cmd_segment(args) -> int:
    from core.images import load_image, save_image
    from core.jobs import JobRequest, subject_mask

    _require_prompt(args)
    spec = RunSpec(subject=_subject(args), background="transparent")
    _check_outputs([args.out], args, args.image)
    image = load_image(args.image)
    request = JobRequest(image=image, spec=spec)
    mask = subject_mask(request)
    save_image(mask, args.out)
    print(f"wrote {terminal_safe(args.out)} ({image.width}x{image.height}, "
          f"{int((mask > 0).mean() * 100)}% subject)")
    return 0


def _subject(args) -> Subject:
    given_mask = getattr(args, "mask", None) is not None
    return Subject(clicks=tuple(args.point or ()), box=args.box, candidate=args.candidate,
                   segmenter=None if given_mask else args.segmenter,
                   auto=bool(getattr(args, "auto", False)) and not given_mask)


def _require_prompt(args) -> None:
    if not args.point and args.box is None and getattr(args, "mask", None) is None \
            and not getattr(args, "auto", False):
        raise InvalidOptionError("give the subject with --auto, --point X,Y (repeatable), --box X1,Y1,X2,Y2 "
                                 "or --mask MASK.png")


def cmd_replace(args) -> int:
    from tqdm import tqdm

    from core.images import load_image, load_mask, save_image
    from core.jobs import JobRequest

    _require_prompt(args)
    _no_history_locally(args)
    spec = replace_spec(args)
    out = Path(args.out)
    if spec.background.kind == "transparent" and out.suffix.lower() not in (".png", ".webp"):
        raise InvalidOptionError(f"a transparent background needs a .png or .webp output, not {out.suffix or 'no suffix'}")
    n_out = spec.generation.variants if spec.generation is not None else 1
    _check_outputs(_output_paths(out, n_out), args, args.image, args.mask,
                   spec.background.path if spec.background.kind == "image" else None)
    image = load_image(args.image)
    mask = load_mask(args.mask, image) if args.mask else None
    engine = get_engine()                   # in this process, or the service (BACKDROP_SERVER_URL)
    request = JobRequest(image=image, spec=spec, source_name=Path(args.image).name, mask=mask)

    # The bar only draws on a terminal, so piped stderr keeps the one-line `error:` contract.
    bar = tqdm(total=100, unit="%", desc="starting", file=sys.stderr, leave=False,
               disable=not sys.stderr.isatty(),
               bar_format="{desc:<12} {percentage:3.0f}%|{bar}| {elapsed}")

    said: set[str] = set()

    def progress(stage: str, fraction: float) -> None:
        if stage.startswith("preparing the CPU engine") and stage not in said:   # once per model
            said.add(stage)                      # a line per component, on a terminal or not
            tqdm.write(stage, file=sys.stderr)
        bar.set_description_str(stage)
        bar.n = int(fraction * 100)
        bar.refresh()

    try:
        result = engine.run(request, record=not args.no_history, progress=progress,
                            cancel=threading.Event(), original=Path(args.image).read_bytes())
    finally:
        bar.close()
    paths = _output_paths(out, len(result.outputs))
    for path, img in zip(paths, result.outputs):
        save_image(img, path)
    seeds = [s for s in result.seeds if s is not None]
    on = f" on {terminal_safe(engine.where)}" if engine.where else ""      # whose history
    run = f" (history run {result.run_id}{on})" if result.run_id is not None else ""
    print(f"wrote {terminal_safe(', '.join(map(str, paths)))}{run}" + (f" seeds {seeds}" if seeds else ""))
    if result.record_error:
        _error(f"the output was written, but the run is not in history: {result.record_error}")
        return 2
    return 0


def _no_history_locally(args) -> None:
    """--no-history cannot be honoured in team mode: refuse it rather than record anyway."""
    if getattr(args, "no_history", False) and not get_engine().can(CAN_SKIP_HISTORY):
        raise InvalidOptionError("--no-history is not available in team mode (BACKDROP_SERVER_URL is "
                                 "set): the service records every run")


def cmd_serve(args) -> int:
    from core.service import serve_forever
    return serve_forever(args.host, args.port, address=args.address, num_cpus=args.num_cpus) or 0


def cmd_batch(args) -> int:
    from tqdm import tqdm

    from core.batch import BatchSubject, run_batch

    _no_history_locally(args)
    if args.point or args.box:
        raise InvalidOptionError("batch takes --rel-point / --rel-box (fractions of each image's size) "
                                 "or --masks DIR, not pixel --point / --box")
    subject = BatchSubject(masks=Path(args.masks) if args.masks else None,
                           rel_points=tuple(args.rel_point or ()), rel_box=args.rel_box,
                           segmenter=None if args.masks else args.segmenter,
                           auto=args.auto and not args.masks)
    spec = replace_spec(args)
    in_dir, out_dir = Path(args.in_dir), Path(args.out)
    suffix = "." + args.format
    bar = tqdm(unit="photo", file=sys.stderr, disable=not sys.stderr.isatty())

    def progress(name: str, i: int, n: int) -> None:
        bar.total, bar.n = n, i
        bar.set_description_str(terminal_safe(short(name, 30)))

    def check(outputs: list[Path]) -> None:    # inputs are checked by run_batch itself
        protected = _protected()
        for out in outputs:
            check_output(out, protected=protected)

    said: set[str] = set()

    def preparing(text: str, fraction: float) -> None:   # the CPU engine, once per model part
        with lock:
            if text not in said:
                said.add(text)
                tqdm.write(text, file=sys.stderr)

    from core import cpu_engine
    lock = threading.Lock()
    try:
        with cpu_engine.progress_to(preparing):
            report = run_batch(in_dir, out_dir, spec, subject, name=args.name, suffix=suffix,
                               record=not args.no_history, check_outputs=check, progress=progress,
                               workers=args.workers, review_below=args.review_below)
    finally:
        bar.close()
    for name, line in report.failed:
        _error(f"{terminal_safe(name)}: {line}")
    if report.review:
        print(f"to review ({len(report.review)}: automatic subject less sure than {args.review_below:g}):")
        for name, confidence in report.review:
            print(f"  {terminal_safe(name)}  confidence {confidence:.2f}")
    print(f"{len(report.done)} done, {len(report.skipped)} already done, {len(report.failed)} failed "
          f"-> {terminal_safe(str(out_dir))}")
    return 1 if report.failed else 0


def _fraction_point(text: str):
    parts = text.split(",")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        fx, fy = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
        if not (0 <= fx <= 1 and 0 <= fy <= 1) or label not in (0, 1):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad relative point {short(text, 40)!r}: expected FX,FY[,LABEL] "
                                         "with FX, FY fractions from 0 to 1 of the width and height")
    return (fx, fy, label)


def _fraction_box(text: str):
    try:
        box = tuple(float(v) for v in text.split(","))
        if len(box) != 4 or not all(0 <= v <= 1 for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad relative box {short(text, 40)!r}: expected FX1,FY1,FX2,FY2, "
                                         "fractions from 0 to 1 with FX2 > FX1 and FY2 > FY1")
    return box


def replace_spec(args) -> RunSpec:
    """The run spec of `replace`'s arguments (the spec checks every value)."""
    from core import cli_catalogue
    from core.spec import Background

    framing = cli_catalogue.framing(args)          # a preset may set the background too
    background = Background.parse(args.background)
    generation = None
    if background.kind == "sd":
        if not args.prompt:
            raise InvalidOptionError("--background sd needs --prompt TEXT describing the new background")
        values = _spec_values(args, Generation)
        generation = Generation.for_mode(values.pop("mode", None) or config.default_mode(), **values)
    return RunSpec(subject=_subject(args), mask=MaskOptions(**_spec_values(args, MaskOptions)),
                   background=background, generation=generation, framing=framing)


def _output_paths(out: Path, n: int) -> list[Path]:
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(n)]


NAME_CELLS = 24      # `history list`: the source file name's column, in terminal cells
MODEL_CELLS = 18     # ... and the model's (a long model id is cut, the prompt column stays put)


def _cells(c: str) -> int:
    import unicodedata
    if unicodedata.category(c) in ("Mn", "Me", "Cf"):     # combining marks, zero-width characters
        return 0
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1


def _cell(text: str, width: int) -> str:
    """`text` as one column of a table: control characters escaped, cut in the middle with "…"
    (the start and the end, a file's number and extension, stay) and padded to `width` terminal
    cells (a wide character takes two)."""
    s = terminal_safe(text)
    if sum(map(_cells, s)) > width:
        tail, used = "", 0
        for c in reversed(s):
            if used + _cells(c) > (width - 1) // 2:
                break
            tail, used = c + tail, used + _cells(c)
        head, room = "", width - 1 - used
        for c in s:
            if _cells(c) > room:
                break
            head, room = head + c, room - _cells(c)
        s = f"{head}…{tail}"
    return s + " " * (width - sum(map(_cells, s)))


def cmd_history_list(args) -> int:
    engine = get_engine()
    rows = engine.runs(limit=args.limit, batch=args.batch)
    if engine.where and not args.json:     # whose runs these are
        print(f"runs of the Backdrop service at {terminal_safe(engine.where)}")
    if args.json:   # json escapes C0 controls; C1, DEL and bidi controls are escaped here too
        print(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}",
                               json.dumps(rows, default=str, ensure_ascii=False)))
        return 0
    if not rows:
        print(f"no runs in the batch “{terminal_safe(args.batch)}”" if args.batch else "no runs yet")
        return 0
    for r in rows:
        text = terminal_safe((r.get("prompt") or r.get("background") or "").replace("\n", " "))
        name = r.get("source_name") or "-"       # shown, never opened
        if args.batch and name.startswith(f"{args.batch}/"):    # the batch is said once, by --batch
            name = name[len(args.batch) + 1:]
        print(f"{r['id']:>6}  {str(r['created'])[:19]}  {r['status']:<9}  {_cell(name, NAME_CELLS)}  "
              f"{_cell(r.get('model') or '-', MODEL_CELLS)}  {text[:60]}")
    return 0


def cmd_history_export(args) -> int:
    from core.export import export_zip
    from core.history import open_store
    if not args.favorites and not args.ids:
        raise InvalidOptionError("choose what to export: --favorites and/or --ids 1,2,3")
    _check_outputs([args.out], args)
    path, count = export_zip(open_store(), args.out, run_ids=args.ids, favorites=args.favorites)
    print(f"wrote {terminal_safe(str(path))} ({count} outputs)")
    return 0


def _grace_s() -> float:
    return settings().sweep_grace_s


def cmd_history_store(args) -> int:
    """The store ids with claims in the image store: this database's, and others (other databases
    sharing it, or dead ones: a deleted or copied-over database) with their last use."""
    from datetime import datetime

    from core.history import open_store
    from core.history.identity import list_stores
    store = open_store()
    print(f"image store: {terminal_safe(store.blobs.location)}")
    print(f"{'STORE ID':<32}  {'CLAIMS':>6}  {'LAST USED':<16}  DATABASE")
    for e in list_stores(store, _grace_s()):
        last = datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M") if e.last_used else "-"
        print(f"{e.store_id:<32}  {e.claims:>6}  {last:<16}  {e.state}: {terminal_safe(e.detail)}")
    return 0


def cmd_history_store_forget(args) -> int:
    from core.history import open_store
    from core.history.identity import forget_store
    done = forget_store(open_store(), args.store_id, force=args.force, grace_s=_grace_s())
    print(f"forgot store {done.store_id}: released {done.claims} claims, deleted {done.removed_files} "
          f"files ({done.removed_bytes / 1e6:.1f} MB) no other database claims")
    return 0


def cmd_models_list(args) -> int:
    from core import weights
    for m in weights.list_models():
        present = "present" if m.present else "missing"
        print(f"{m.task:<8} {m.name:<16} {m.size_text:>13}  {present:<8} {m.description}")
    print(f"weights dir: {config.weights_dir()}")
    return 0


def cmd_models_download(args) -> int:
    """Fetch a model and what its default mode needs on this machine: an inpainting model in fast
    mode (the default without a CUDA GPU) brings its LCM-LoRA and tiny autoencoder (weights.
    download_plan). The plan is printed first; --dry-run stops there."""
    from tqdm import tqdm

    from core import weights
    # A registry name may exist for several tasks (`tiny`); anything else is an inpainting repo id / folder.
    tasks = [t for t in weights.TASKS if (t, args.name) in weights.REGISTRY]
    if not tasks and "/" not in args.name:
        weights.get_spec(args.name, "segment")  # raises the "unknown model" error with the known list
    plan = []
    for task in tasks or ["inpaint"]:
        plan += [s for s in weights.download_plan(args.name, task, args.addons)
                 if (s.task, s.name) not in {(p.task, p.name) for p in plan}]
    mode = config.default_mode()
    for i, spec in enumerate(plan if args.dry_run or len(plan) > 1 else []):   # the plan, when it says more
        addon = i and spec.task == "fast"
        why = ("  (Fast mode's add-on" + (": Fast is the default here)" if mode == "fast" else ")")) if addon else ""
        state = "present" if weights.is_present(spec) else (
            "built in code" if spec.kind.startswith("tiny") else weights._size_text(spec.size_bytes))
        print(f"{'+ ' if addon else ''}{terminal_safe(spec.name)} ({spec.task}, {state}) -> "
              f"{terminal_safe(str(weights.local_path(spec)))}{why}")
    if args.dry_run:
        return 0
    for spec in plan:
        with tqdm(unit="B", unit_scale=True, desc=spec.name, file=sys.stderr,
                  disable=not sys.stderr.isatty()) as bar:
            def progress(done: int, total: int | None) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()
            path = weights.download(spec.name, spec.task, progress=progress)
        print(f"{terminal_safe(spec.name)} ({spec.task}): {terminal_safe(str(path))}")
        if spec.task == "inpaint" and args.addons is not False:   # a repo id: its family is known now
            for extra in weights.addons(spec.name, "fast" if args.addons else None):
                if extra not in plan:
                    plan.append(extra)
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from core import weights

    p = _Parser(prog="python -m core", description="Backdrop: replace a photo's background from the command line.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def subject_args(sp):
        sp.add_argument("--point", action="append", type=_point, metavar="X,Y[,LABEL]",
                        help="a click in original pixels; LABEL 1 = subject (default), 0 = not subject")
        sp.add_argument("--box", type=_box, metavar="X1,Y1,X2,Y2", help="a box around the subject")
        sp.add_argument("--segmenter", choices=[m.name for m in weights.specs("segment")],
                        default=config.default_segmenter(),
                        help="segmentation model (default: %(default)s; grabcut needs no weights)")
        sp.add_argument("--candidate", type=_integer, metavar="N",
                        help=Subject.model_fields["candidate"].description)

    s = sub.add_parser("segment", help="write the subject mask for clicks/box")
    s.add_argument("image")
    s.add_argument("--out", required=True, metavar="MASK.png", help="L-mode PNG, 255 = subject")
    s.add_argument("--overwrite", action="store_true", help="allow --out to be the input photo")
    cli_catalogue.add_auto(s)
    subject_args(s)
    s.set_defaults(func=cmd_segment)

    r = sub.add_parser("replace", help="replace the background")
    r.add_argument("image")
    r.add_argument("--out", required=True, metavar="OUT.png",
                   help="where to write the result (a symlink is followed; an existing file is replaced)")
    r.add_argument("--overwrite", action="store_true",
                   help="allow --out to be one of the inputs (the photo, --mask, the background image)")
    r.add_argument("--mask", metavar="MASK.png", help="subject mask (255 = subject) instead of clicks")
    subject_args(r)
    r.add_argument("--background", default=None, metavar="SPEC",
                   help="sd | color:#RRGGBB | blur:RADIUS | image:PATH | transparent (default: sd)")
    _spec_options(r.add_argument_group("generation (background sd)"), Generation)
    _spec_options(r.add_argument_group("mask"), MaskOptions)
    cli_catalogue.add_arguments(r)
    r.add_argument("--no-history", action="store_true", help="do not record this run")
    r.set_defaults(func=cmd_replace)

    b = sub.add_parser("batch", help="replace the background of every photo in a folder (resumable)")
    b.add_argument("in_dir", metavar="IN_DIR")
    b.add_argument("--out", required=True, metavar="OUT_DIR",
                   help="folder for the results (not IN_DIR or the mask folder), OUT_DIR/<photo stem>.png "
                        "(<stem>-<ext>.png where two photos share a stem); a photo whose result is "
                        "already there is skipped, so a rerun finishes an interrupted batch")
    b.add_argument("--format", choices=("png", "jpg", "webp"), default="png", help="output format")
    b.add_argument("--masks", metavar="DIR", help="subject masks, one per photo with the same file name "
                                                  "stem (white = subject)")
    b.add_argument("--rel-point", action="append", type=_fraction_point, metavar="FX,FY[,LABEL]",
                   help="a click as fractions of the width and height (0.5,0.5 = the centre); repeatable")
    b.add_argument("--rel-box", type=_fraction_box, metavar="FX1,FY1,FX2,FY2",
                   help="a box around the subject as fractions of the width and height")
    b.add_argument("--name", metavar="TEXT", help="the batch's name in history (default: IN_DIR's name); "
                                                  "runs are recorded as NAME/<file name>")
    subject_args(b)
    b.add_argument("--background", default=None, metavar="SPEC",
                   help="sd | color:#RRGGBB | blur:RADIUS | image:PATH | transparent (default: sd)")
    _spec_options(b.add_argument_group("generation (background sd)"), Generation)
    _spec_options(b.add_argument_group("mask"), MaskOptions)
    cli_catalogue.add_arguments(b, batch=True)
    b.add_argument("--no-history", action="store_true", help="do not record the runs (in-process only)")
    b.add_argument("--workers", type=_whole(1, 64), default=None, metavar="N",
                   help="photos in flight at once (default 1 in-process; 8 with BACKDROP_SERVER_URL, "
                        "spread over the service's replicas)")
    b.set_defaults(func=cmd_batch)

    sv = sub.add_parser("serve", help="team mode: the HTTP API (/v1, OpenAPI at /docs) on Ray Serve")
    from core.service import add_arguments as serve_arguments
    serve_arguments(sv)
    sv.set_defaults(func=cmd_serve)

    h = sub.add_parser("history", help="list or export recorded runs; see and release the image store's claims",
                       description="Recorded runs: list them, export them, and see (store) or release "
                                   "(store forget ID) the image store's claims of other or dead databases.")
    hs = h.add_subparsers(dest="history_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    hl = hs.add_parser("list", help="newest runs first")
    hl.add_argument("--json", action="store_true")
    hl.add_argument("--limit", type=_whole(1, 100_000), default=20)
    hl.add_argument("--batch", metavar="NAME", help="only the runs of this batch (batch's --name, "
                                                    "by default its folder's name)")
    hl.set_defaults(func=cmd_history_list)
    he = hs.add_parser("export", help="zip of outputs with parameters, masks and a manifest")
    he.add_argument("out", metavar="OUT.zip")
    he.add_argument("--favorites", action="store_true")
    he.add_argument("--ids", type=_ids)
    he.set_defaults(func=cmd_history_export)
    hst = hs.add_parser("store", help="store ids claiming images in the image store (this database's "
                                      "and others', with their last use); `forget ID` releases a dead one")
    hst.set_defaults(func=cmd_history_store)
    hsts = hst.add_subparsers(dest="store_command", metavar="SUBCOMMAND", parser_class=_Parser)
    hf = hsts.add_parser("forget", help="release a store id whose database is gone: its claims go, "
                                        "and the images no other database claims are deleted")
    hf.add_argument("store_id", metavar="ID")
    hf.add_argument("--force", action="store_true",
                    help="also when its database cannot be checked from here (another machine or "
                         "server): you are sure it, and every copy of it, is gone")
    hf.set_defaults(func=cmd_history_store_forget)

    m = sub.add_parser("models", help="list or download model weights")
    ms = m.add_subparsers(dest="models_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    ms.add_parser("list", help="every known model, its size and whether it is present").set_defaults(func=cmd_models_list)
    md = ms.add_parser("download", help="fetch (and verify) a model's files, and an inpainting "
                       "model's Fast-mode add-ons where Fast is the default")
    md.add_argument("name")
    md.add_argument("--addons", action=argparse.BooleanOptionalAction, default=None,
                    help="an inpainting model's Fast-mode add-ons (LCM-LoRA, tiny autoencoder): "
                         "default: where Fast is the default mode (no CUDA GPU, or BACKDROP_MODE=fast)")
    md.add_argument("--dry-run", action="store_true", help="print what would be fetched, and where")
    md.set_defaults(func=cmd_models_download)
    return p


def _debug() -> bool:
    """BACKDROP_DEBUG: an internal error shows its traceback (a bad setting there is no help)."""
    try:
        return settings().debug
    except BackdropError:
        return False


def main(argv: list[str] | None = None) -> int:
    from core import log
    log.configure(default="WARNING")      # stderr stays the one `error:` line unless asked
    try:
        settings()                       # a bad BACKDROP_* value: one line, whatever the command
    except BackdropError as e:
        _error(e)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except BackdropError as e:
        _error(e)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory: try a smaller photo or fewer variants", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not bad input: still one line; BACKDROP_DEBUG=1 shows the traceback
        if _debug():
            raise
        logging.getLogger(__name__).debug("internal error", exc_info=True)
        _error(f"internal error ({type(e).__name__}: {short(e, 120)}); rerun with BACKDROP_DEBUG=1 "
               "for details")
        return 1
