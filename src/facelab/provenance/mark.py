"""The provenance mark: what says a file was made by facelab's model, not a camera.

The source type is IPTC's controlled vocabulary, which C2PA, Google and Meta read too.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from facelab import __version__
from facelab.errors import FacelabError

IPTC_DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED_ALGORITHMIC_MEDIA = IPTC_DST + "trainedAlgorithmicMedia"
#: Source types that say "synthetic" (IPTC 2023 vocabulary); other tools may write these.
SYNTHETIC_TYPES = frozenset(IPTC_DST + t for t in (
    "trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "algorithmicMedia",
    "compositeSynthetic",
))
TOOL = "facelab"


class UnreadableFile(FacelabError):
    """A file that is missing, not an image or video, or too damaged to read."""

    exit_code = 2


@dataclass(frozen=True)
class Mark:
    """One provenance mark. Fields other tools may leave out are empty strings."""

    source_type: str
    tool: str = ""
    version: str = ""
    model_id: str = ""
    created: str = ""  # ISO 8601 with offset, seconds: kept as text so it reads back exactly

    @classmethod
    def synthetic(cls, model_id: str, created: datetime | None = None) -> Mark:
        """facelab's mark for media made with the model `model_id` (e.g. "quick96:ab12cd34")."""
        if not model_id.isprintable() or len(model_id) > 200:
            raise ValueError(f"model id {model_id!r}: printable text, 200 characters at most")
        when = (created or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        return cls(TRAINED_ALGORITHMIC_MEDIA, TOOL, __version__, model_id, when.isoformat())

    @property
    def is_synthetic(self) -> bool:
        return self.source_type in SYNTHETIC_TYPES


def require_file(path: Path) -> int:
    """The size of the file at `path`; `UnreadableFile` when there is none to read."""
    try:
        st = path.stat()
    except OSError as e:
        raise UnreadableFile(f"{path} does not exist.") from e
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(f"{path} is not a file.")
    return st.st_size
