"""Provenance: every image or video facelab merges says, machine-readably, that it is
synthetic (IPTC digital source type `trainedAlgorithmicMedia`, tool, version, model id).

Where it goes: PNG `iTXt` XMP, JPEG APP1 XMP, video container tags (see video.py for what
each muxer keeps). There is deliberately no way to leave the mark out. See
docs/PROVENANCE.md.
"""

from facelab.provenance.image import encode_marked, read_mark, write_marked
from facelab.provenance.jpeg import jpeg_bytes_with_mark
from facelab.provenance.mark import TRAINED_ALGORITHMIC_MEDIA, Mark, UnreadableFile
from facelab.provenance.png import png_bytes_with_mark
from facelab.provenance.video import read_video_mark, video_metadata

__all__ = [
    "TRAINED_ALGORITHMIC_MEDIA", "Mark", "UnreadableFile", "encode_marked",
    "jpeg_bytes_with_mark", "png_bytes_with_mark", "read_mark", "read_video_mark",
    "video_metadata", "write_marked",
]
