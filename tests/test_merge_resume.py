"""Resume after a crash: a merged frame counts as done only when its PNG is complete.

Merged frames are renamed into place without a per-file fsync in the worker (the driver
syncs them afterwards), so a power cut can leave a frame empty or cut short under its final
name; the rerun must redo it rather than skip it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.merge.merger import _done
from facelab.provenance.mark import Mark
from facelab.provenance.png import png_bytes_with_mark


def test_only_a_complete_png_counts_as_done(tmp_path: Path):
    out = tmp_path / "merged"
    out.mkdir()
    frame = tmp_path / "00007.png"
    image = np.random.default_rng(0).integers(0, 255, (36, 64, 3), np.uint8)
    data = png_bytes_with_mark(cv2.imencode(".png", image)[1].tobytes(), Mark.synthetic("m@1:x"))
    merged = out / "00007.png"
    assert not _done(frame, out, None, None)  # missing
    merged.write_bytes(data)
    assert _done(frame, out, None, None)
    merged.write_bytes(data[:-40])  # cut short
    assert not _done(frame, out, None, None)
    merged.write_bytes(b"")  # empty, as delayed allocation leaves it
    assert not _done(frame, out, None, None)
    merged.write_bytes(data)
    masks = tmp_path / "merged_mask"
    masks.mkdir()
    assert not _done(frame, out, masks, None)  # its mask is missing
    (masks / "00007.png").write_bytes(cv2.imencode(".png", image[..., 0])[1].tobytes())
    assert _done(frame, out, masks, None)
