"""A killed stage leaves half-written temporary files; the next run of that stage removes
them (theirs only: a live run's temporaries and other files stay) and succeeds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from facelab.faceset.folder import resolve
from facelab.faceset.sort import sort_faceset
from facelab.fsutil import clean_stale_parts
from facelab.progress import NullReporter
from facelab.video.assemble import AssembleOptions, assemble
from facelab.video.cut import cut_video
from facelab.video.denoise import denoise_frames
from facelab.video.extract import ExtractOptions, extract_frames
from facelab.workspace import Workspace
from tests.conftest import ROOT
from tests.test_faceimage import write_faces

PNG = ExtractOptions(fmt="png")  # dst as frame images: the route these tests read


def make_dst(ws: Path, frames: int = 8, size: tuple[int, int] = (64, 48)) -> Workspace:
    """A workspace whose dst is a synthetic noise clip, its frames extracted (video.json
    written) by the real stage: what `video assemble --frames data_dst` needs."""
    ws.mkdir(parents=True, exist_ok=True)
    write_clip(ws / "data_dst.mp4", frames, size)
    workspace = Workspace(ws)
    extract_frames(workspace, "dst", opts=PNG)
    return workspace


def write_clip(path: Path, frames: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "30"})
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        for _ in range(frames):  # noise: slow to encode, so a kill lands mid-assemble
            img = rng.integers(0, 256, (size[1], size[0], 3), np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        out.mux(vs.encode(None))


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@contextlib.contextmanager
def live_pid() -> Iterator[int]:
    """The pid of another process that is running for the duration."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def part(target: Path, pid: int) -> Path:
    """A temporary file as `fsutil.temp_sibling` names it in process `pid`."""
    p = target.with_name(f".{target.stem}.part-{pid}{target.suffix}")
    p.write_bytes(b"half written")
    return p


def facelab_cmd(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "facelab", *map(str, args)]


def test_clean_stale_parts_removes_only_dead_writers_parts(tmp_path: Path) -> None:
    dead = dead_pid()
    with live_pid() as live:
        gone = [part(tmp_path / "result.mp4", dead), part(tmp_path / "frames.json", dead),
                part(tmp_path / "x", dead)]
        kept = [part(tmp_path / "result.mp4", live), part(tmp_path / "a.json", os.getpid()),
                part(tmp_path / "b.png", 99999999999999999999),  # no pid: os.kill overflows
                tmp_path / "user.part-1.mp4", tmp_path / ".notes.part-x.txt"]
        for p in kept[3:]:
            p.write_bytes(b"a user's file")
        removed = clean_stale_parts(tmp_path)
    assert sorted(removed) == sorted(gone)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in gone)


def test_clean_stale_parts_of_one_output_leaves_the_folders_others(tmp_path: Path) -> None:
    dead = dead_pid()
    mine, other = part(tmp_path / "clip_cut.mp4", dead), part(tmp_path / "clip.mp4", dead)
    sub = tmp_path / "sub"
    sub.mkdir()
    deep = part(sub / "clip_cut.mp4", dead)
    assert clean_stale_parts(tmp_path, of=tmp_path / "clip_cut.mp4") == [mine]
    assert other.exists() and deep.exists()


def test_killed_assemble_leaves_a_part_the_next_run_removes(tmp_path: Path) -> None:
    """The real CLI, SIGKILLed once its .part file exists; the next run (here through the
    library, to spare a second start-up) removes it; a live run's .part stays."""
    n = 48  # noise at 512×288: about a second to encode, time to catch the .part file
    ws = make_dst(tmp_path / "ws", frames=n, size=(512, 288)).root
    args = ("-w", ws, "video", "assemble", "--frames", ws / "data_dst")
    proc = subprocess.Popen(facelab_cmd(*args), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    killed = ws / f".result.part-{proc.pid}.mp4"
    deadline = time.monotonic() + 60
    while not killed.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"assemble ended before the kill: {err}"
    assert killed.exists() and not (ws / "result.mp4").exists()

    with live_pid() as live:
        running = part(ws / "result.mp4", live)  # another run, still writing: not ours
        reporter = NullReporter()
        assemble(Workspace(ws), AssembleOptions(frames_dir=ws / "data_dst"), reporter)
        assert not killed.exists(), "the killed run's .part file is still there"
        assert running.exists()
    assert any("Took over the lock left by" in line and f"(pid {proc.pid})" in line
               for line in reporter.collected), reporter.collected
    with av.open(str(ws / "result.mp4")) as done:
        assert sum(1 for _ in done.decode(video=0)) == n


def test_video_extract_and_denoise_remove_their_leftovers(tmp_path: Path) -> None:
    ws = make_dst(tmp_path / "ws")
    dst = ws.frames_dir("dst")
    dead = dead_pid()
    with live_pid() as live:
        # ImageWriter's frame temporaries carry no pid: stale under the stage's lock
        stale = [dst / ".00003.part.png", part(dst / "frames.json", dead),
                 part(ws.video_json, dead)]
        stale[0].write_bytes(b"half a png")
        running = part(dst / "frames.json", live)
        user = dst / ".00003.part.png.keep"
        user.write_bytes(b"not ours")
        rep = extract_frames(ws, "dst", opts=PNG)  # finished before: a rerun only cleans
        assert rep.frames_written == 0
        assert not any(p.exists() for p in stale) and running.exists() and user.exists()

        stale = [dst / ".00002.denoise-part.png", part(dst / "denoise.json", dead)]
        stale[0].write_bytes(b"half a png")
        denoise_frames(ws, "dst", 3, workers=1)
        assert not any(p.exists() for p in stale) and running.exists()


def test_cut_removes_its_own_leftover_only(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    write_clip(source, 6, (64, 48))
    dead = dead_pid()
    mine, other = part(tmp_path / "clip_cut.mp4", dead), part(tmp_path / "other.mp4", dead)
    rep = cut_video(source, 0.0, 0.12)
    assert rep.frames == 3 and rep.output.is_file()
    assert not mine.exists() and other.exists()  # the folder is the user's, not ours


def test_faceset_operation_removes_its_leftovers(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.init()
    aligned = ws.aligned_dir("src")
    write_faces(aligned, 3)
    dead = dead_pid()
    journal = aligned / ".facelab-journal"
    journal.mkdir()
    stale = [part(aligned / ".facelab-features.json", dead), part(aligned / "x_debug.jpg", dead),
             part(journal / "000001.json", dead)]
    rep = sort_faceset(resolve(ws, "src", None), "origname")
    assert rep.moved == 3
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in aligned.glob("*.jpg")) == ["00000.jpg", "00001.jpg",
                                                            "00002.jpg"]
