"""`final`: the best N faces — sharp, spread evenly over yaw × pitch, no near-duplicates.

The pose plane is cut into cells of `STEP` degrees. Cells are visited farthest-first (start
at the leftmost yaw, then always the cell farthest from those already visited), so even
when N is smaller than the number of cells the picks span the whole range. Round after
round each cell gives its sharpest face not yet taken, skipping faces nearly identical in
colour to one it already gave (consecutive video frames) and faces much blurrier than the
set's median; those are used last, only if N is not reached otherwise. Kept faces are
ordered by yaw; the rest move to the trash.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from facelab.faceset.features import FaceRecord, column
from facelab.faceset.histogram import roots
from facelab.faceset.methods import Selection, SortOptions, method

DEFAULT_TARGET = 2000
STEP = 5.0  # degrees per cell side
DUPLICATE = 0.995  # mean Bhattacharyya coefficient of the B, G, R histograms above which
#                    two faces of one cell count as the same picture
BLURRY = 0.35  # sharpness below this share of the median: used only to reach N


def cell_order(centres: np.ndarray) -> list[int]:
    """Farthest-first traversal of cell centres (K×2 degrees), from the leftmost yaw."""
    first = int(np.lexsort((centres[:, 1], centres[:, 0]))[0])
    order, dist = [first], np.linalg.norm(centres - centres[first], axis=1)
    for _ in range(len(centres) - 1):
        nxt = int(np.argmax(dist))
        order.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(centres - centres[nxt], axis=1))
    return order


@method("final", ("blur", "pose", "hist"))
def best_n(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """The best N (--target, default 2000): sharp faces covering yaw and pitch evenly,
    near-duplicates dropped; the rest move to the trash."""
    target = opts.target or DEFAULT_TARGET
    pose, sharp, r = column(recs, "pose"), column(recs, "blur"), roots(recs)
    cells: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in np.argsort(-sharp, kind="stable"):  # sharpest first within every cell
        cells[tuple(np.floor(pose[i] / STEP).astype(int))].append(int(i))
    keys = list(cells)
    centres = (np.array(keys, np.float64) + 0.5) * STEP
    queues = [cells[keys[k]] for k in cell_order(centres)]
    floor = BLURRY * float(np.median(sharp))
    kept: list[int] = []
    taken = [[] for _ in queues]  # per cell: indices kept
    spare: list[int] = []  # duplicates and blurry faces, for the last resort
    heads = [0] * len(queues)
    while len(kept) < target and any(h < len(q) for h, q in zip(heads, queues, strict=True)):
        for c, q in enumerate(queues):
            while heads[c] < len(q) and len(kept) < target:
                i = q[heads[c]]
                heads[c] += 1
                same = taken[c] and float((r[taken[c]] @ r[i]).max()) / 3 > DUPLICATE
                if same or sharp[i] < floor:
                    spare.append(i)
                    continue
                kept.append(i)
                taken[c].append(i)
                break
    if len(kept) < target:
        spare.sort(key=lambda i: -sharp[i])
        kept += spare[:target - len(kept)]
    chosen = set(kept)
    order = sorted(kept, key=lambda i: (pose[i, 0], pose[i, 1]))
    return Selection(order, [i for i in range(len(recs)) if i not in chosen])
