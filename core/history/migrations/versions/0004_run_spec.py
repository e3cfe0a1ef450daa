"""Runs keep their parameters as one run spec (core/spec.py, version 1) in runs.spec (JSON);
the per-parameter columns go. What search and filters need stays in indexed columns derived from
the spec: background_kind, model, search_text.

Every existing row is converted without loss: clicks, box, the chosen candidate, segmenter, mask
options, background, prompt, negative, seed, steps, guidance, strength, scheduler, variants and
model. The conversion is written out here (not imported from core.spec) so this revision never
changes behaviour; downgrade() rebuilds the columns from the spec.

Columns are dropped with ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), never by recreating the
table: recreating `runs` would cascade-delete its outputs while foreign keys are on.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD = [sa.Column("segmenter", sa.String(64)), sa.Column("clicks", sa.JSON()),
       sa.Column("box", sa.JSON()), sa.Column("mask_options", sa.JSON()),
       sa.Column("background", sa.Text()), sa.Column("prompt", sa.Text()),
       sa.Column("negative", sa.Text()), sa.Column("seed", sa.BigInteger()),
       sa.Column("steps", sa.Integer()), sa.Column("guidance", sa.Float()),
       sa.Column("strength", sa.Float()), sa.Column("scheduler", sa.String(64)),
       sa.Column("variants", sa.Integer())]
MASK_KEYS = ("grow", "feather", "fill_holes", "min_area", "invert")


def _runs(*names: str) -> sa.Table:
    cols = {c.name: c for c in OLD}
    extra = {"id": sa.Integer(), "model": sa.Text(), "spec": sa.JSON()}
    return sa.table("runs", *[sa.column(n, extra[n]) if n in extra else sa.column(n, cols[n].type)
                              for n in names])


def _background(text: str | None) -> dict:
    kind, _, arg = (text or "").partition(":")
    out = {"kind": kind, "color": None, "radius": None, "path": None}
    if kind == "color":
        h = arg.lstrip("#")
        out["color"] = [int(h[i:i + 2], 16) for i in (0, 2, 4)]
    elif kind == "blur":
        out["radius"] = float(arg)
    elif kind == "image":
        out["path"] = arg
    return out


def spec_of(row) -> dict:
    """Revision 0003 columns -> a version 1 run spec (JSON-ready)."""
    opts = dict(row.mask_options or {})
    background = _background(row.background)
    generation = None
    if background["kind"] == "sd":
        generation = {"prompt": row.prompt or "", "negative": row.negative or "",
                      "steps": row.steps if row.steps is not None else 30,
                      "guidance": row.guidance if row.guidance is not None else 7.5,
                      "strength": row.strength if row.strength is not None else 1.0,
                      "seed": row.seed, "variants": row.variants or 1,
                      "scheduler": row.scheduler, "model": row.model or ""}
    return {"version": 1,
            "subject": {"clicks": [{"x": float(c[0]), "y": float(c[1]),
                                    "label": int(c[2]) if len(c) > 2 else 1}
                                   for c in (row.clicks or [])],
                        "box": [float(v) for v in row.box] if row.box else None,
                        "candidate": opts.get("candidate"), "segmenter": row.segmenter},
            "mask": {k: opts.get(k, False if k in ("fill_holes", "invert") else 0) for k in MASK_KEYS},
            "background": background, "generation": generation}


def upgrade() -> None:
    op.add_column("runs", sa.Column("spec", sa.JSON(), nullable=False, server_default="{}"))
    bind = op.get_bind()
    runs = _runs("id", "model", "spec", *(c.name for c in OLD))
    rows = bind.execute(sa.select(runs)).all()
    if rows:
        bind.execute(runs.update().where(runs.c.id == sa.bindparam("run_id"))
                     .values(spec=sa.bindparam("new_spec", type_=sa.JSON())),
                     [{"run_id": r.id, "new_spec": spec_of(r)} for r in rows])
    for col in OLD:
        op.drop_column("runs", col.name)


def downgrade() -> None:
    for col in OLD:
        op.add_column("runs", col.copy())
    bind = op.get_bind()
    runs = _runs("id", "spec", *(c.name for c in OLD))
    rows = bind.execute(sa.select(runs.c.id, runs.c.spec)).all()
    values = []
    for r in rows:
        s = r.spec if isinstance(r.spec, dict) else json.loads(r.spec or "{}")
        sub, gen, bg = s.get("subject", {}), s.get("generation") or {}, s.get("background", {})
        text = bg.get("kind", "")
        if text == "color":
            text += ":#%02x%02x%02x" % tuple(bg["color"])
        elif text == "blur":
            text += f":{bg['radius']:g}"
        elif text == "image":
            text += f":{bg['path']}"
        values.append({"run_id": r.id, "segmenter": sub.get("segmenter"),
                       "clicks": [[c["x"], c["y"], c["label"]] for c in sub.get("clicks", [])],
                       "box": sub.get("box"),
                       "mask_options": dict(s.get("mask", {})) | {"candidate": sub.get("candidate")},
                       "background": text, "prompt": gen.get("prompt"), "negative": gen.get("negative"),
                       "seed": gen.get("seed"), "steps": gen.get("steps"), "guidance": gen.get("guidance"),
                       "strength": gen.get("strength"), "scheduler": gen.get("scheduler"),
                       "variants": gen.get("variants", 1)})
    if values:
        names = [c.name for c in OLD]
        bind.execute(runs.update().where(runs.c.id == sa.bindparam("run_id"))
                     .values(**{n: sa.bindparam("v_" + n) for n in names}),
                     [{"run_id": v.pop("run_id")} | {"v_" + k: x for k, x in v.items()} for v in values])
    op.drop_column("runs", "spec")
