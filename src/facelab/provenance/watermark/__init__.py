"""facelab's invisible watermark: a keyed spread-spectrum pattern in luma that survives
re-encoding, downscaling, crops and letterboxing, carrying "facelab" and a model id hash.
See docs/WATERMARK.md for the design and the decision rule.
"""

from facelab.provenance.watermark.clip import ClipDetection, detect_clip, sample_pairs
from facelab.provenance.watermark.code import model_hash, model_payload
from facelab.provenance.watermark.detect import Z_THRESHOLD, Detection, detect
from facelab.provenance.watermark.embed import embed, mark_frame
from facelab.provenance.watermark.pattern import (
    DEFAULT_KEY,
    FLIP_FRAMES,
    PERIOD,
    frame_sign,
)

detect_watermark = detect  # its name outside this package (`detect` is also the submodule)

__all__ = [
    "DEFAULT_KEY", "FLIP_FRAMES", "PERIOD", "Z_THRESHOLD", "ClipDetection", "Detection",
    "detect", "detect_clip", "detect_watermark", "embed", "frame_sign",
    "mark_frame", "model_hash", "model_payload", "sample_pairs",
]
