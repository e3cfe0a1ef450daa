"""The studio method's separation of the subject from its backdrop, its cast shadow, its floor
reflection and the floor seen through it (core.auto's steps 3 and 4): what decides, on the working
copy, which shadow-like or brighter pieces are backdrop and which are the product.

Split from core/auto.py (which fits the backdrop, gathers the evidence, refines the outline and
scores the result); the two are one method, tuned together on bench/catalogue.py's tune half.
"""
from __future__ import annotations

import numpy as np

WALL = 3                 # edges are widened to this many working px before they wall anything in
NECK = 5                 # shadow-like areas are split at necks narrower than 2 x NECK + 1 working px
SOFT_RIM = 0.22          # a shadow-like piece whose rim is at least this much soft backdrop is shadow
OPEN_RIM = 0.7           # ... or, for one standing in the product's upper part, this much
UPPER = 0.5              # a cast shadow does not reach above this share of the product's height
MIRROR = 0.6             # a reflection is at most this strong against the backdrop as its mirror pixel
FLOOR = 0.3              # the floor under a see-through hole is at most this share of the height
FOOT = 0.03              # a contact shadow under the product is at most this share of the height tall
SOFT_TOP = 0.3           # a contact shadow's top fades: its shading changes less than this over 3 px
STEM = 18                # a thin upright part at least this tall (working px) is no shadow sliver
GAP = 0.5                # a gap across a pale product is at most this share of its row's span
WALLED_ROWS = 12         # a grey face joined to its shadow is walled on both sides over this many rows
SHINE = 0.05             # a see-through hole has at most this share of brighter-than-backdrop pixels around it
SMOOTH = 0.25            # ... and, in the product's upper part, at most this share of its rim turning smoothly
                         # into shade or shine
HOLE_MIN = 30            # an enclosed plain area this big (working px) may be a see-through hole


def upper_line(found: np.ndarray) -> float:
    """The row above which lies the product's upper part (UPPER of the rows `found` spans): where
    no floor shadow reaches."""
    rows = np.nonzero(found.any(axis=1))[0]
    return rows[0] + UPPER * (rows[-1] - rows[0])


def components_touching_border(passable: np.ndarray) -> np.ndarray:
    import cv2
    n, lab = cv2.connectedComponents(passable.view(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    border = border[border > 0]
    reached = np.zeros(n, bool)
    reached[border] = True
    return reached[lab]


def grow(seed: np.ndarray, into: np.ndarray) -> np.ndarray:
    """seed plus the pieces of `into` (4-connected) that touch it."""
    import cv2
    n, lab = cv2.connectedComponents((seed | into).view(np.uint8), connectivity=4)
    hit = np.zeros(n, bool)
    hit[np.unique(lab[seed])] = True
    hit[0] = False
    return hit[lab]


def background(subject: np.ndarray, shadow: np.ndarray, bright: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """The backdrop and its shadows: grown from the border over backdrop-like pixels, then over the
    shadow-like pieces whose rim mostly fades into that backdrop (a cast shadow) rather than
    meeting sharp edges (a grey product, walled by its outline). Shadow-like areas are split at
    narrow necks first, so a grey product standing in its shadow is not taken with it."""
    import cv2
    plain = ~subject & ~shadow & ~bright
    edge_px = edge
    edge = cv2.dilate(edge.view(np.uint8), np.ones((WALL, WALL), np.uint8)) > 0   # close small gaps
    bg = components_touching_border(plain & ~edge)
    pending = (shadow | bright) & ~edge & ~bg
    if pending.any():
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * NECK + 1, 2 * NECK + 1))
        core = cv2.erode(pending.view(np.uint8), disc) > 0
        n, lab = cv2.connectedComponents(core.view(np.uint8), connectivity=8)
        k3 = np.ones((3, 3), np.uint8)
        lab = lab.astype(np.int32)
        for _ in range(NECK + 1):                     # give the pixels cut off by the erosion back
            grown = cv2.dilate(lab.astype(np.float32), k3).astype(np.int32)
            free = pending & (lab == 0)
            lab[free] = grown[free]
        if n > 1:
            ring = np.zeros(n, np.float64)
            soft = np.zeros(n, np.float64)
            big = cv2.dilate(lab.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
            rim = (big > 0) & (lab == 0)
            np.add.at(ring, big[rim], 1)
            np.add.at(soft, big[rim & bg], 1)
            is_shadow = soft >= SOFT_RIM * np.maximum(ring, 1)
            is_shadow &= ~standing(lab, n, (edge_px | subject) & ~bg) | (soft >= OPEN_RIM * ring)
            is_shadow[0] = False
            taken = is_shadow[lab]
            # a grey product part joined to its shadow through a gap in its base: its rows are
            # walled by sharp edges on both sides, the shadow's fade out
            taken &= ~walled(taken, (edge | subject) & ~bg & ~pending)
            bg = bg | taken
        # shadow pixels no piece took (thin bits) go with the backdrop they touch, but for an
        # upright one standing in the product's upper part (a glass's stem)
        thin = pending & (lab == 0) if n > 1 else pending
        m, tl, stats, _ = cv2.connectedComponentsWithStats(thin.view(np.uint8), connectivity=8)
        if m > 1:
            high = stats[:, cv2.CC_STAT_HEIGHT]
            tall = (high >= STEM) & (high > 3 * stats[:, cv2.CC_STAT_WIDTH])
            upright = tall & standing(tl, m, (edge_px | subject) & ~bg)
            upright[0] = False
            thin = thin & ~upright[tl]
        bg = grow(bg, thin)
    # backdrop-like pixels cut off from the border only by shadows, and the backdrop side of edges
    bg = grow(bg, plain & ~edge)
    for _ in range(WALL // 2 + 1):                    # the backdrop side of the walls, a step at a time
        bg = bg | ((cv2.dilate(bg.view(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~subject & edge & ~edge_px)
    return grow(bg, plain & edge_px)


def walled(piece: np.ndarray, wall: np.ndarray) -> np.ndarray:
    """The part of a shadow-like piece that is a grey product face: its row runs that meet a wall
    (a sharp edge or clear subject) at both ends, in blocks at least WALLED_ROWS rows tall that start
    above the rest of the piece (a cast shadow lies on the floor, under the product)."""
    import cv2
    h, w = piece.shape
    pad = np.zeros((h, w + 2), bool)
    pad[:, 1:-1] = piece
    d = np.diff(pad.view(np.int8), axis=1)
    ys_s, xs_s = np.nonzero(d == 1)                  # run starts (x)
    ys_e, xs_e = np.nonzero(d == -1)                 # run ends (x exclusive)
    out = np.zeros_like(piece)
    if len(xs_s) == 0:
        return out
    wpad = np.zeros((h, w + 2), bool)
    wpad[:, 1:-1] = wall
    ok = wpad[ys_s, xs_s] & wpad[ys_e, xs_e + 1]
    for y, a, b in zip(ys_s[ok], xs_s[ok], xs_e[ok]):
        out[y, a:b] = True
    n, lab, stats, _ = cv2.connectedComponentsWithStats(out.view(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_HEIGHT] >= WALLED_ROWS
    out = keep[lab]
    if not out.any():
        return out
    # only what lies above the soft rest of its piece
    m, plab = cv2.connectedComponents(piece.view(np.uint8), connectivity=8)
    rest = piece & ~out
    ys = np.nonzero(rest)[0]
    soft_top = np.full(m, 1 << 30)
    np.minimum.at(soft_top, plab[rest], ys)
    ys2 = np.nonzero(out)[0]
    wall_top = np.full(m, 1 << 30)
    np.minimum.at(wall_top, plab[out], ys2)
    good = wall_top + WALLED_ROWS <= soft_top
    return out & good[plab]


def standing(lab: np.ndarray, n: int, sharp: np.ndarray) -> np.ndarray:
    """Per piece: a dark piece that reaches the upper part of the product (the rows and columns its
    sharp outline and clear subject pixels span) cannot be the cast shadow, which lies on the
    floor at the base: it is a grey face of the product (a highlight as bright as the backdrop can
    open its outline at the top, so its rim alone does not tell)."""
    ys, xs = np.nonzero(sharp)
    out = np.zeros(n, bool)
    if len(ys) == 0:
        return out
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    py, px = np.nonzero(lab)
    k = lab[py, px]
    ptop = np.full(n, 1 << 30)
    np.minimum.at(ptop, k, py)
    pl, pr = np.full(n, 1 << 30), np.full(n, -1)
    np.minimum.at(pl, k, px)
    np.maximum.at(pr, k, px)
    out = (ptop < top + UPPER * (bottom - top)) & (pl >= left) & (pr <= right)
    return out


def see_through(found: np.ndarray, plain: np.ndarray, edge: np.ndarray, bright: np.ndarray,
                shade: np.ndarray) -> np.ndarray:
    """The see-through holes in the subject: pieces of plain backdrop (the backdrop's colour and
    brightness, no edge) enclosed by subject pixels on every side, at least HOLE_MIN working px,
    with nothing inside them (a label with print has its print inside): the hole of a mug's
    handle, the floor between a figure's legs. Not one with pixels brighter than the backdrop
    around it (a label's plain part beside its specular stripe), nor one in the product's upper
    part whose rim there turns smoothly into `shade` (a label on a round bottle). A blank, matte
    label of exactly the backdrop's colour looks the same as a hole and is taken out too."""
    import cv2
    cand = found & plain & ~edge
    n, lab, stats, _ = cv2.connectedComponentsWithStats(cand.view(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros_like(found)
    near = cv2.dilate((~found).view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    touches = np.zeros(n, bool)
    touches[np.unique(lab[near & cand])] = True              # next to the backdrop: an outline part
    solid = np.zeros(n, bool)
    line = upper_line(found)
    for k in np.nonzero(~touches & (stats[:, cv2.CC_STAT_AREA] >= HOLE_MIN))[0]:
        if k == 0:
            continue
        x, y, bw, bh = stats[k, :4]
        piece = (lab[y:y + bh, x:x + bw] == k).astype(np.uint8)
        filled = ~components_touching_border(~piece.astype(bool)) if min(bw, bh) > 2 else piece > 0
        if np.count_nonzero(filled) > 1.01 * stats[k, cv2.CC_STAT_AREA] + 2:
            continue
        # across a thin line of print there is more of the same paper: a printed label
        y0, x0 = max(0, y - 4), max(0, x - 4)
        win = (slice(y0, y + bh + 4), slice(x0, x + bw + 4))
        sub = lab[win]
        piece = (sub == k).astype(np.uint8)
        ring = (cv2.dilate(piece, np.ones((9, 9), np.uint8)) > 0) & (sub != k)
        printed = np.count_nonzero(ring & (sub > 0)) > 0.02 * stats[k, cv2.CC_STAT_AREA]
        # ... unless the thin lines are all there is: across them lies the backdrop (crossed stems)
        solid[k] = not printed or (ring & ~found[win]).any()
        # a highlight brighter than the backdrop next to it: a glossy pale surface (a label)
        solid[k] &= np.count_nonzero(ring & bright[win]) <= SHINE * np.count_nonzero(ring)
        if y < line:
            # in the product's upper part, a hole's rim is a sharp edge all round: a pale surface
            # that turns into shade (or shine) smoothly is a label on a round product (lower
            # down, the floor between legs runs into its shadows the same way)
            rim = (cv2.dilate(piece, np.ones((3, 3), np.uint8)) > 0) & (sub != k)
            rim[max(0, int(line) - y0):] = False
            smooth = rim & (shade | bright)[win] & ~edge[win]
            solid[k] &= np.count_nonzero(smooth) <= SMOOTH * np.count_nonzero(rim)
    return solid[lab]


def floor_below(found: np.ndarray, holes: np.ndarray, subject: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """The see-through holes and, under each, the floor down to the subject's lowest row in that
    column when, above the contact line (the lowest FOOT of the photo's height), nothing there is
    clearly subject and no edge crosses it: between a figure's legs the floor carries the cast
    and contact shadows, which the legs and the contact line wall in."""
    out = holes.copy()
    if not holes.any():
        return out
    h = found.shape[0]
    rows = np.arange(h)[:, None]
    lowest_hole = np.where(holes, rows, -1).max(axis=0)
    bottom = np.where(found, rows, -1).max(axis=0)
    top = int(np.nonzero(found.any(axis=1))[0][0])
    foot = max(2, int(round(FOOT * h)))
    cols = np.nonzero((lowest_hole >= 0) & (bottom > lowest_hole)
                      & (bottom - lowest_hole <= FLOOR * (bottom.max() - top + 1)))[0]
    for c in cols:
        y0, y1 = lowest_hole[c] + 1, bottom[c] + 1
        above = max(y0, y1 - foot)                   # above the contact line
        if not subject[y0:above, c].any() and not edge[y0:above, c].any():
            out[y0:y1, c] = True
    return out


def drop_reflection(found: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """Take a floor reflection off the bottom of the subject: below some line y0 every row is a
    faint mirror image of the rows above it (each pixel's contrast with the backdrop under
    MIRROR x that of its mirror pixel at 2 y0 - y) in 8 rows of 10, down to the subject's lowest
    row. The highest such y0 with at least 3 rows below it wins, though lines below it fail (a
    reflection compared with itself, under a contact shadow as dark as the product's base); the
    faint pixels below it are dropped. (MIRROR: 0.5 left reflections darkened by the cast shadow
    on the tune half; 0.7 took a pale-bottomed product's base.)"""
    rows = np.nonzero(found.any(axis=1))[0]
    if len(rows) < 8:
        return found
    top, bottom = int(rows[0]), int(rows[-1])
    height = bottom - top + 1
    best = None
    for y0 in range(bottom - 3, bottom - int(0.45 * height), -1):
        d = bottom - y0                                     # rows below y0
        if y0 - d < top:
            break
        below = found[y0 + 1:bottom + 1]
        mirror = found[y0 - d:y0][::-1]
        faint = below & mirror & (contrast[y0 + 1:bottom + 1] < MIRROR * contrast[y0 - d:y0][::-1])
        n_below = below.sum(axis=1)
        share = faint.sum(axis=1) / np.maximum(n_below, 1)
        if np.mean(share[n_below > 0] >= 0.7) < 0.8:       # (a contact shadow's rows may fail)
            continue
        best = (y0, faint)
    if best is None:
        return found
    y0, faint = best
    out = found.copy()
    out[y0 + 1:y0 + 1 + faint.shape[0]] &= ~faint
    return out


def drop_foot_shadow(found: np.ndarray, shadow: np.ndarray, dark: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Take the contact shadow off the subject's foot: in each column, shadow-like pixels at the
    bottom of the subject, at most FOOT x the photo's height tall, right under pixels that are
    clearly subject (the product's base), go back to the backdrop; and so do the runs with nothing
    on them (the contact shadow reaching past a narrower or rounded base, or under a grey one,
    seen through the gap) whose top fades into the backdrop above them (s, the shading ratio,
    changes by less than SOFT_TOP over 3 px there: a black product's thin foot has a sharp top).
    Beside the base, `dark` pixels (the backdrop's colour, darker than a cast shadow: a contact
    shadow under a cast one) count too; under it they cut the bases of black products on the tune
    half. (A contact shadow is dark and thin, and often sharp enough to be walled in with the
    product.)"""
    under, _ = _foot_runs(found, shadow)
    _, beside = _foot_runs(found, shadow | dark)
    if beside.any():
        cols = np.nonzero(beside.any(axis=0))[0]
        top = np.argmax(beside[:, cols], axis=0)
        above, below = np.maximum(top - 1, 0), np.minimum(top + 2, s.shape[0] - 1)
        sharp = np.abs(s[above, cols] - s[below, cols]) >= SOFT_TOP
        beside[:, cols[sharp]] = False
    return found & ~under & ~beside


def _foot_runs(found: np.ndarray, passable: np.ndarray):
    """Per column, the run of `passable` subject pixels from the subject's lowest row up, at most
    FOOT x the height: those that end on a subject pixel that is not passable (under a base), and
    those that end on backdrop (nothing on them)."""
    h = found.shape[0]
    limit = max(2, int(round(FOOT * h)))
    under, beside = np.zeros_like(found), np.zeros_like(found)
    has = found.any(axis=0)
    if not has.any():
        return under, beside
    bottom = h - 1 - np.argmax(found[::-1], axis=0)          # lowest subject row per column
    cols = np.nonzero(has)[0]
    run = np.zeros(len(cols), np.int32)
    alive = np.ones(len(cols), bool)
    for k in range(limit + 1):
        y = bottom[cols] - k
        ok = y >= 0
        yy = np.clip(y, 0, h - 1)
        on = ok & found[yy, cols]
        more = on & passable[yy, cols]
        ends = alive & ~more & (run > 0)
        for target, end in ((under, ends & on), (beside, ends & ~on)):
            for c, r in zip(cols[end], run[end]):
                target[bottom[c] - r + 1:bottom[c] + 1, c] = True
        alive &= more
        run += alive
        if not alive.any():
            break
    return under, beside


def bridge(found: np.ndarray, subject: np.ndarray) -> np.ndarray:
    """found plus the gaps across a pale product: a stretch of a row between two pale (not clearly
    subject, 4 px in from the gap) parts of it, at most GAP of the row's span, in the product's upper part (above UPPER
    of its height) or under a stretch bridged in the row above. An off-white product whose middle is
    the backdrop's brightness is open at the top and bottom, so nothing else closes it; the floor
    between a figure's legs is under its solid belly, so it is not bridged."""
    rows = np.nonzero(found.any(axis=1))[0]
    if len(rows) == 0:
        return found
    top, bottom = int(rows[0]), int(rows[-1])
    line = upper_line(found)
    pale = found & ~subject
    out = found.copy()
    prev = np.zeros(found.shape[1], bool)
    for y in range(top, bottom + 1):
        xs = np.nonzero(found[y])[0]
        filled = np.zeros_like(prev)
        if len(xs) > 1:
            span = xs[-1] - xs[0] + 1
            for i in np.nonzero(np.diff(xs) > 1)[0]:
                a, b = xs[i], xs[i + 1]
                if not (pale[y, a - 3:a + 1].all() and pale[y, b:b + 4].all()) or b - a - 1 > GAP * span:
                    continue
                if y > line and prev[a + 1:b].mean() < 0.5:
                    continue
                filled[a + 1:b] = True
        out[y] |= filled
        prev = filled
    return out
