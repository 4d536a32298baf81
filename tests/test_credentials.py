"""C2PA Content Credentials (issue 20): the signing key, a manifest on every result format,
tampering, another signer, recovery from the store by the watermark's payload, and c2pa's
own reader reading what we write. Frames are marked as merge marks them (XMP, watermark,
then signed), from the bundled GRID clip (examples/), so nothing here needs ../shared."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import av
import c2pa
import cv2
import numpy as np
import pytest

from facelab.provenance import Mark
from facelab.provenance.credentials import (
    init_keys,
    load_keys,
    read_file,
    sign_result_bytes,
    signing_for,
)
from facelab.provenance.credentials import store as manifest_store
from facelab.provenance.credentials.keys import KEY_FILE, credentials_dir
from facelab.provenance.credentials.recover import recover
from facelab.provenance.png import encode_png
from facelab.provenance.verify import verify
from facelab.provenance.watermark import mark_frame, model_payload
from facelab.video.assemble import AssembleOptions, assemble
from facelab.video.extract import ExtractOptions, extract_frames
from facelab.video.formats import FORMATS
from facelab.workspace import Workspace
from tests.conftest import ROOT, assert_one_line_error, put_video, run_facelab, run_in_process

MODEL = "quick96@1200:ab12cd34ef"
CLIP = ROOT / "examples" / "speaker_a_1.mpg"


@pytest.fixture(scope="module")
def mark() -> Mark:
    return Mark.synthetic(MODEL)


@pytest.fixture(scope="module")
def signed_ws(tmp_path_factory, mark: Mark) -> Workspace:
    """dst = the bundled GRID clip; merged/ = its 75 frames marked as merge marks them
    (XMP + watermark by frame number, signed last, manifests filed in credentials/)."""
    return signed_workspace(tmp_path_factory.mktemp("cred") / "ws", CLIP, mark)


def signed_workspace(root: Path, clip: Path, mark: Mark) -> Workspace:
    root.mkdir()
    put_video(root, "dst", clip)
    ws = Workspace(root)
    extract_frames(ws, "dst", opts=ExtractOptions(fmt="png"))
    ws.merged_dir.mkdir(exist_ok=True)
    signing = signing_for(mark, root / manifest_store.FOLDER, {"dst": root / "data_dst.mpg"})
    for i, p in enumerate(sorted(ws.frames_dir("dst").glob("*.png"))):
        image = mark_frame(cv2.imread(str(p)), mark, index=i)
        data = sign_result_bytes(encode_png(image, mark), p.name, signing)
        (ws.merged_dir / p.name).write_bytes(data)
    return ws


@pytest.fixture(scope="module")
def assembled(signed_ws: Workspace) -> dict[str, Path]:
    outs = {}
    for fmt, spec in FORMATS.items():
        outs[fmt] = signed_ws.root / f"result_{fmt}.{spec.ext}"
        rep = assemble(signed_ws, AssembleOptions(format=fmt, output=outs[fmt]))
        assert rep.manifest == ("embedded" if spec.ext != "webm" else "none: c2pa cannot "
                                "embed in .webm"), rep.manifest
    return outs


def frame(ws: Workspace, n: int = 0) -> Path:
    return sorted(ws.merged_dir.glob("*.png"))[n]


# --- keys -----------------------------------------------------------------------------


def test_key_init_force_and_the_users_own(tmp_path: Path):
    folder = tmp_path / "creds"
    pair = init_keys(folder=folder)
    assert (folder / KEY_FILE).stat().st_mode & 0o777 == 0o600
    with pytest.raises(Exception, match="--force"):
        init_keys(folder=folder)
    assert load_keys(folder).key_pem == pair.key_pem
    other = init_keys(folder=tmp_path / "other")
    again = init_keys(other.key_path, other.cert_path, force=True, folder=folder)
    assert again.key_pem == other.key_pem != pair.key_pem
    trashed = list((folder / "trash").rglob(KEY_FILE))
    assert [p.read_bytes() for p in trashed] == [pair.key_pem]  # kept, not deleted


def test_cli_init_refuses_mismatched_key_in_one_line(tmp_path: Path):
    a, b = init_keys(folder=tmp_path / "a"), init_keys(folder=tmp_path / "b")
    res = run_in_process("credentials", "init", "--key", a.key_path, "--cert", b.cert_path,
                         "--force")
    assert_one_line_error(res, "does not belong")


def test_tests_never_touch_the_real_config():
    assert credentials_dir().is_relative_to(os.environ["XDG_CONFIG_HOME"])
    assert not str(credentials_dir()).startswith(str(Path.home() / ".config"))


# --- images ---------------------------------------------------------------------------


def test_merged_frame_manifest_is_valid_and_readable_by_c2pa(signed_ws: Workspace):
    path = frame(signed_ws)
    got = read_file(path, load_keys())
    assert got.state == "valid" and got.own and got.self_signed and not got.trusted
    assert got.model_id == MODEL and got.payload == model_payload(MODEL)
    assert got.source_type.endswith("trainedAlgorithmicMedia")
    digest = hashlib.sha256(CLIP.read_bytes()).hexdigest()
    assert got.ingredients == {"dst": f"data_dst.mpg sha256:{digest}"}
    # interoperability: c2pa's own reader, no facelab code
    with path.open("rb") as f:
        reader = c2pa.Reader("image/png", f)
        manifest = reader.get_active_manifest()
        assert reader.get_validation_state() == "Valid"
    labels = [a["label"] for a in manifest["assertions"]]
    assert "c2pa.soft-binding" in labels and "thumbnail" not in manifest  # no faces in it
    action = manifest["assertions"][labels.index("c2pa.actions.v2")]["data"]["actions"][0]
    assert action["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
    assert action["softwareAgent"]["name"] == "facelab"


def test_jpeg_carries_a_manifest_and_its_xmp(tmp_path: Path, mark: Mark):
    """JPEG (merge writes PNG; the library signs JPEG as well): APP11 manifest, XMP kept."""
    from facelab.provenance import encode_marked, read_mark

    data = encode_marked(".jpg", np.full((64, 96, 3), 90, np.uint8), mark)
    path = tmp_path / "frame.jpg"
    path.write_bytes(sign_result_bytes(data, path.name, signing_for(mark, None)))
    assert read_file(path).state == "valid" and read_mark(path) == mark


def _with_pixel_changed(png: bytes) -> bytes:
    """The same PNG, chunks and all, but one pixel of its image data different."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    image[10, 10] = 255 - image[10, 10]
    fresh = encode_png(image)
    idat = fresh[fresh.index(b"IDAT") - 4:fresh.index(b"IEND") - 4]
    start, end = png.index(b"IDAT") - 4, png.index(b"IEND") - 4
    return png[:start] + idat + png[end:]


def test_changed_pixel_is_tampered(signed_ws: Workspace, tmp_path: Path):
    bad = tmp_path / "changed.png"
    bad.write_bytes(_with_pixel_changed(frame(signed_ws).read_bytes()))
    got = read_file(bad)
    assert got.state == "tampered" and any("Hash" in p for p in got.problems), got
    res = run_facelab("verify", bad)
    assert "C2PA manifest: TAMPERED" in res.out


def test_another_signer_is_reported(signed_ws: Workspace, mark: Mark, tmp_path: Path):
    """A manifest signed by a key that is not the user's: valid, and said to be another's."""
    forger = init_keys(folder=tmp_path / "forger")
    signing = signing_for(mark, None)
    signing = type(signing)(signing.claims, None, forger.folder)
    png = encode_png(cv2.imread(str(frame(signed_ws))), mark)
    forged = tmp_path / "forged.png"
    forged.write_bytes(sign_result_bytes(png, forged.name, signing))
    got = read_file(forged, load_keys())
    assert got.state == "valid" and got.own is False
    res = run_facelab("verify", forged)
    assert res.rc == 0 and "ANOTHER signer than your key" in res.out, res.out


def test_stripped_frame_recovers_its_manifest_from_the_store(signed_ws: Workspace,
                                                             tmp_path: Path):
    """Re-encoded as a half-size JPEG without metadata: no manifest, the watermark, and
    the manifest found by its payload in the workspace's store (the default there)."""
    image = cv2.imread(str(frame(signed_ws, 5)))
    half = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    stripped = signed_ws.root / "stripped.jpg"
    cv2.imwrite(str(stripped), half, [cv2.IMWRITE_JPEG_QUALITY, 60])
    res = run_facelab("verify", "--json", stripped)
    got = json.loads(res.out)[0]
    assert got["manifest"]["state"] == "absent"
    assert [m["payload"] for m in got["marks"]] == [f"{model_payload(MODEL):08x}"]
    rec = got["recovered"]
    assert rec["matches"] and rec["manifest"]["model_id"] == MODEL
    assert rec["store"] == str(signed_ws.root / "credentials")
    assert res.rc == 0
    elsewhere = tmp_path / stripped.name  # outside the workspace: only with --store
    elsewhere.write_bytes(stripped.read_bytes())
    res = run_facelab("verify", "--json", elsewhere, cwd=tmp_path)  # no ./workspace there
    assert json.loads(res.out)[0]["recovered"] is None
    res = run_facelab("verify", "--store", signed_ws.root / "credentials", elsewhere)
    assert "claims MATCH the watermark" in res.out, res.out
    res = run_in_process("-w", signed_ws.root, "verify", elsewhere)  # the given workspace's
    assert "claims MATCH the watermark" in res.out, res.out


# --- videos ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_assemble_format_carries_a_valid_manifest(assembled: dict[str, Path],
                                                        signed_ws: Workspace, fmt: str):
    out = assembled[fmt]
    got = read_file(out, load_keys())
    if out.suffix == ".webm":  # Matroska: c2pa-python 0.38 has no handler (docs say so)
        assert got.state == "unsupported"
        return
    assert got.state == "valid" and got.own and got.model_id == MODEL, got
    stored = manifest_store.lookup(signed_ws.root / "credentials", model_payload(MODEL))
    assert out.name + ".c2pa" in {p.name for p in stored}
    # the rerun finds it current (manifest included), a forced one signs it anew
    assert assemble(signed_ws, AssembleOptions(format=fmt, output=out)).skipped


@pytest.mark.slow
def test_changed_byte_in_video_is_tampered(assembled: dict[str, Path], tmp_path: Path):
    data = bytearray(assembled["mp4"].read_bytes())
    with av.open(str(assembled["mp4"])) as c:  # a byte inside the video stream's data
        packet = next(p for p in c.demux(video=0) if p.size > 100)
        pos = packet.pos + packet.size // 2
    data[pos] ^= 0x01
    bad = tmp_path / "changed.mp4"
    bad.write_bytes(bytes(data))
    assert read_file(bad).state == "tampered"


def reencode_stripped(src: Path, dest: Path) -> None:
    """CRF 30 at half size, no metadata at all (what an upload does)."""
    with av.open(str(src)) as c, av.open(str(dest), "w") as out:
        vs = c.streams.video[0]
        s = out.add_stream("libx264", rate=vs.average_rate)
        s.width, s.height = vs.width // 4 * 2, vs.height // 4 * 2
        s.pix_fmt, s.options = "yuv420p", {"crf": "30", "preset": "medium"}
        for f in c.decode(vs):
            out.mux(s.encode(f.reformat(s.width, s.height)))
        out.mux(s.encode(None))


@pytest.mark.slow
def test_reencoded_video_recovers_its_manifest(assembled: dict[str, Path],
                                               signed_ws: Workspace):
    stripped = signed_ws.root / "uploaded.mp4"
    reencode_stripped(assembled["mp4"], stripped)
    res = run_facelab("verify", stripped)
    assert res.rc == 0, res.out + res.err
    lines = res.out.splitlines()
    assert lines[1].strip() == "C2PA manifest: absent"
    assert "container metadata" not in res.out and "watermark in" in lines[2]
    assert f"payload {model_payload(MODEL):08x}" in lines[2]
    assert lines[3].strip().startswith("recovered manifest (manifest store")
    assert "claims MATCH the watermark" in res.out and MODEL in res.out


@pytest.mark.slow
def test_unreadable_payload_is_matched_against_the_store(tmp_path: Path, mark: Mark):
    """GRID speaker B after CRF 30 + 50 %: its watermark is found but its payload's CRC
    fails (as in the watermark bench); its soft chips still pick our payload out of a store
    that also files another model's manifest, and match none in a store without ours."""
    ws = signed_workspace(tmp_path / "ws", ROOT / "examples" / "speaker_b.mpg", mark)
    other = Mark.synthetic("quick96@1:someone-else")
    png = encode_png(np.zeros((8, 8, 3), np.uint8))
    for store in (ws.root / "credentials", tmp_path / "others"):
        sign_result_bytes(png, "other.png", signing_for(other, store))
    rep = assemble(ws, AssembleOptions(format="mp4", audio=False))
    stripped = ws.root / "uploaded.mp4"
    reencode_stripped(rep.output, stripped)
    v = verify(stripped)
    wm = next(f for f in v.findings if f.detector == "watermark")
    assert v.credentials.state == "absent" and v.recovery is not None and v.recovery.matches
    assert v.recovery.payload == model_payload(MODEL)
    got = recover(None, ws.root / "credentials", soft=wm.soft)  # as when the CRC fails
    assert got.matches and got.how.startswith("matched, Z"), got.how
    assert recover(None, tmp_path / "others", soft=wm.soft).credentials is None


def test_unmarked_grid_clip_exits_1():
    res = run_facelab("verify", CLIP)
    assert res.rc == 1 and "no provenance mark" in res.out, res.out
    res = run_facelab("verify", "--json", CLIP)
    assert res.rc == 1 and json.loads(res.out)[0]["synthetic"] is False


def test_soft_binding_payload_round_trips():
    """The soft-binding value is the watermark payload's 4 bytes, as c2pa stores them."""
    mark = Mark.synthetic("x@1:00")
    data, manifest = _sign_blank(mark)
    reader = c2pa.Reader("image/png", io.BytesIO(data))
    sb = next(a for a in reader.get_active_manifest()["assertions"]
              if a["label"] == "c2pa.soft-binding")["data"]
    assert sb["alg"] == "org.facelab.watermark.1"
    import base64
    assert int.from_bytes(base64.b64decode(sb["blocks"][0]["value"]), "big") == \
        model_payload("x@1:00")
    assert len(manifest) < 8000  # no thumbnail: a few kB of claims and certificates


def _sign_blank(mark: Mark) -> tuple[bytes, bytes]:
    from facelab.provenance.credentials.manifest import sign_bytes

    png = encode_png(np.full((64, 64, 3), 128, np.uint8), mark)
    return sign_bytes(png, "image/png", signing_for(mark, None), "blank.png")


def _chunks(png: bytes) -> list[bytes]:
    pos, kinds = 8, []
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        assert zlib.crc32(png[pos + 4:pos + 8 + length]) == struct.unpack(
            ">I", png[pos + 8 + length:pos + 12 + length])[0]
        kinds.append(kind)
        pos += 12 + length
    return kinds


def test_signed_png_keeps_the_xmp_and_is_well_formed(signed_ws: Workspace):
    kinds = _chunks(frame(signed_ws).read_bytes())
    assert b"iTXt" in kinds and b"caBX" in kinds and kinds[-1] == b"IEND"


def test_input_hashes_are_remembered_until_the_file_changes(tmp_path: Path, mark: Mark):
    clip = tmp_path / "data_dst.mpg"
    clip.write_bytes(CLIP.read_bytes())
    first = signing_for(mark, None, {"dst": clip}).claims.ingredients[0].sha256
    assert first == hashlib.sha256(clip.read_bytes()).hexdigest()
    cache = load_keys().folder / "input_hashes.json"
    remembered = {k: v for k, v in json.loads(cache.read_text()).items()
                  if k.startswith(f"{clip.resolve()}|")}
    assert list(remembered.values()) == [first]
    cache.write_text(json.dumps({k: "0" * 64 for k in remembered}))  # proves it is read
    assert signing_for(mark, None, {"dst": clip}).claims.ingredients[0].sha256 == "0" * 64
    with clip.open("ab") as f:
        f.write(b"\0")
    assert signing_for(mark, None, {"dst": clip}).claims.ingredients[0].sha256 == \
        hashlib.sha256(clip.read_bytes()).hexdigest()
