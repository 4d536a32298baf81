"""Output formats of `video assemble`, each a small entry with its defaults beside it.

Alpha support was measured with PyAV 18 (FFmpeg 8): PNG in .mov, and VP9 yuva420p in .webm
(read back with the `libvpx-vp9` decoder; FFmpeg's own `vp9` decoder drops alpha) return
the alpha plane; H.264 cannot carry alpha.

mp4 and mov keep custom metadata keys (the provenance mark) only with
`movflags=+use_metadata_tags`; they are then written as `mdta` keys, `comment` included.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OutputFormat:
    name: str
    ext: str
    muxer: str
    codec: str
    pix_fmt: str
    alpha: bool = False
    lossless: bool = False
    default_crf: int | None = None  # None: the codec takes no CRF
    default_bitrate_mbps: float | None = None
    even_size: bool = False  # 4:2:0 chroma needs even width and height
    options: dict[str, str] = field(default_factory=dict)
    mux_options: dict[str, str] = field(default_factory=dict)  # container (muxer) options
    help: str = ""

    @property
    def input_format(self) -> str:
        """The frame layout handed to the encoder (PyAV converts from it)."""
        return "bgra" if self.alpha else "bgr24"


_MDTA = {"movflags": "+use_metadata_tags"}

FORMATS: dict[str, OutputFormat] = {f.name: f for f in [
    OutputFormat("mp4", "mp4", "mp4", "libx264", "yuv420p", default_crf=18, even_size=True,
                 options={"preset": "medium"}, mux_options=_MDTA,
                 help="H.264, plays everywhere (default CRF 18)."),
    OutputFormat("avi", "avi", "avi", "mpeg4", "yuv420p", default_bitrate_mbps=16,
                 even_size=True, help="MPEG-4 Part 2 (Xvid-like), 16 Mbit/s by default."),
    OutputFormat("mp4-lossless", "mp4", "mp4", "libx264rgb", "bgr24", lossless=True,
                 options={"crf": "0", "preset": "medium"}, mux_options=_MDTA,
                 help="Lossless H.264 in RGB: the frames come back bit for bit (no alpha)."),
    OutputFormat("mov-alpha", "mov", "mov", "png", "rgba", alpha=True, lossless=True,
                 mux_options=_MDTA,
                 help="PNG in QuickTime: lossless with alpha; video editors read it."),
    OutputFormat("webm-alpha", "webm", "webm", "libvpx-vp9", "yuva420p", alpha=True,
                 default_crf=20, options={"row-mt": "1", "deadline": "good", "cpu-used": "4"},
                 help="VP9 with alpha (yuva420p), small; for the web (default CRF 20)."),
]}
