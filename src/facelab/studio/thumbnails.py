"""Small JPEG thumbnails of aligned faces, made once and kept in the workspace's cache.

A thumbnail is named by its face's inode, size and modification time: a rename (a sort, a
trash and its undo) keeps all three, so a sorted faceset reuses every thumbnail, while a
face written again gets a new one. JPEG's DCT scaling (Pillow's `draft`) decodes a 256 px
face at 1/2 scale directly, already the thumbnail's size: making one costs under a
millisecond. The cache is not precious: it is written without fsync, and deleting
`.studio/` only costs the regeneration.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

from PIL import Image

THUMB = 128  # pixels, square (aligned faces are square): a 256 px face's 1/2 DCT scale
QUALITY = 80


def face_key(st: os.stat_result) -> str:
    """What names a face's thumbnail: stable across renames, new when rewritten."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


def thumbnail_bytes(face: Path, size: int = THUMB) -> bytes:
    with Image.open(face) as im:
        im.draft("RGB", (size, size))  # decode at the smallest DCT scale still ≥ size
        small = im.convert("RGB")
    if small.size != (size, size):
        small = small.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def thumbnail(cache: Path, face: Path, size: int = THUMB) -> Path:
    """The cached thumbnail of `face` (made now when missing)."""
    out = cache / f"thumbs{size}" / f"{face_key(face.stat())}.jpg"
    if out.is_file():
        return out
    data = thumbnail_bytes(face, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)  # two requests for one face: both write the same bytes
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
