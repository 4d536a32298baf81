"""The watermark's payload: 32 bits ("facelab" tag + a hash of the model id), a CRC-4, and
first-order Reed–Muller RM(1,5) blocks decoded by a fast Hadamard transform.

Why RM(1,5): its soft-decision maximum-likelihood decoder is one 32×32 matrix product, and
its minimum distance (16 of 32 chips) lets a block through when a third of its chips are
wrong, which is the regime of a hard re-encode at half size.
"""

from __future__ import annotations

import hashlib

import numpy as np

TAG = 0xFA  #: top byte of every payload facelab writes: "made by facelab", format 1
PAYLOAD_BITS = 32
CRC_BITS = 4
BLOCK_BITS = 6  # RM(1,5): 6 message bits → 32 chips
CHIPS = 32
BLOCKS = (PAYLOAD_BITS + CRC_BITS) // BLOCK_BITS  # 6
CODED_BITS = BLOCKS * CHIPS  # 192

# Sylvester Hadamard matrix: row m, column j = (-1)^popcount(m & j).
_IDX = np.arange(CHIPS)
_HADAMARD = np.array([[(-1) ** bin(m & j).count("1") for j in _IDX] for m in _IDX], np.float32)


def model_payload(model_id: str) -> int:
    """The payload facelab embeds for frames of `model_id`: TAG, then 24 bits of its SHA-256."""
    digest = hashlib.sha256(model_id.encode()).digest()
    return (TAG << 24) | int.from_bytes(digest[:3], "big")


def model_hash(payload: int) -> str | None:
    """The 6-hex-digit model hash in a facelab payload, None when the tag is not facelab's."""
    return f"{payload & 0xFFFFFF:06x}" if payload >> 24 == TAG else None


def match(soft: np.ndarray, candidates: list[int]) -> tuple[int | None, float]:
    """The candidate payload whose chips `soft` correlates with best, and that correlation
    in standard deviations of chance (a payload unrelated to `soft` scores ~N(0, 1)).
    Telling a few known payloads apart needs far less signal than decoding 32 bits blind:
    this is how a manifest store recovers a clip whose CRC fails. The first block holds
    only the tag, the same in every facelab payload, so it is left out: it would lift
    every wrong facelab candidate by the signal it carries."""
    s = np.asarray(soft, np.float64)[CHIPS:]
    norm = float(np.linalg.norm(s))
    if not candidates or norm == 0:
        return None, 0.0
    zs = [float(s @ encode(p)[CHIPS:]) / norm for p in candidates]
    best = int(np.argmax(zs))
    return candidates[best], zs[best]


def as_payload(payload: bytes | int) -> int:
    if isinstance(payload, bytes | bytearray):
        if len(payload) > PAYLOAD_BITS // 8:
            raise ValueError(f"a payload holds {PAYLOAD_BITS // 8} bytes, not {len(payload)}")
        payload = int.from_bytes(payload, "big")
    if not 0 <= payload < 1 << PAYLOAD_BITS:
        raise ValueError(f"a payload is an unsigned {PAYLOAD_BITS}-bit integer")
    return int(payload)


def crc4(value: int, nbits: int = PAYLOAD_BITS) -> int:
    """CRC-4 (x⁴ + x + 1) of the `nbits` low bits of `value`, most significant first."""
    reg = 0
    for i in range(nbits - 1, -1, -1):
        top = ((reg >> 3) & 1) ^ ((value >> i) & 1)
        reg = ((reg << 1) & 0xF) ^ (0x3 if top else 0)
    return reg


def encode(payload: bytes | int) -> np.ndarray:
    """CODED_BITS chips (+1 for bit 0, −1 for bit 1) carrying `payload` and its CRC."""
    p = as_payload(payload)
    word = (p << CRC_BITS) | crc4(p)
    chips = []
    for b in range(BLOCKS):
        msg = (word >> (BLOCK_BITS * (BLOCKS - 1 - b))) & ((1 << BLOCK_BITS) - 1)
        sign = -1.0 if msg >> (BLOCK_BITS - 1) else 1.0
        chips.append(sign * _HADAMARD[msg & (CHIPS - 1)])
    return np.concatenate(chips).astype(np.float32)


def decode(soft: np.ndarray) -> int | None:
    """The payload from CODED_BITS soft values (positive = bit 0), None when its CRC fails."""
    t = _HADAMARD @ np.asarray(soft, np.float32).reshape(BLOCKS, CHIPS).T  # CHIPS × BLOCKS
    word = 0
    for b in range(BLOCKS):
        m = int(np.argmax(np.abs(t[:, b])))
        msg = m | ((1 << (BLOCK_BITS - 1)) if t[m, b] < 0 else 0)
        word = (word << BLOCK_BITS) | msg
    p = word >> CRC_BITS
    return p if crc4(p) == word & ((1 << CRC_BITS) - 1) else None
