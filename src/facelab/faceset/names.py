"""Methods about where faces came from: `origname` and `one-face`."""

from __future__ import annotations

import re
from collections import Counter

from facelab.faceset.features import FaceRecord
from facelab.faceset.methods import Selection, SortOptions, method


def natural_key(name: str) -> list:
    """'frame10_0' after 'frame9_0': digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def original(rec: FaceRecord) -> str:
    return rec["info"]["original_name"] or rec.path.name


@method("origname", ())
def by_origname(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Original frame order (the names the faces had at extraction)."""
    return Selection(sorted(range(len(recs)), key=lambda i: natural_key(original(recs[i]))))


@method("one-face", ())
def one_face(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Faces from frames that held more than one face move to the trash; names kept."""
    per_frame = Counter(r["info"]["source_filename"] for r in recs)
    return Selection(None, [i for i, r in enumerate(recs)
                            if per_frame[r["info"]["source_filename"]] > 1])
