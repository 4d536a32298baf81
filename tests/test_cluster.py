"""Stages on a real Ray cluster (issue 19): a head and one worker node started here on
127.0.0.1 alone (tests/ray_node.py; token authentication, as Ray now does by default).
Extraction's outputs are byte for byte those of the local run, from PNG frames (sent with
the items) and from a dst kept in its video (each item sent with the piece of the video
that holds its frames, never the whole film); a Ray worker killed in the middle costs only
its items, which run again; a wrong address is one line."""

from __future__ import annotations

import filecmp
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import (
    assert_one_line_error,
    copy_workspace,
    data_file,
    put_video,
    run_facelab,
    run_in_process,
)

pytestmark = pytest.mark.slow  # real footage and a real cluster (make test-fast skips it)

if importlib.util.find_spec("ray") is None:  # not imported here: the fixture sets its env
    pytest.skip("ray 2.60 (installed by `make test`)", allow_module_level=True)
pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")

NODE = [sys.executable, str(Path(__file__).with_name("ray_node.py"))]
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _listening() -> set[tuple[str, str]]:
    """(address, port) of every listening TCP socket of this machine, hex as in /proc."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A":
                    out.add(tuple(local.split(":")))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> str:
    """A 2-node Ray cluster on 127.0.0.1 (1 CPU each), its token in a file of this test's;
    the environment that reaches it is set for the module's processes."""
    tmp = tmp_path_factory.mktemp("ray")
    token = tmp / "token"
    token.write_text(secrets.token_hex(32))
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's addresses on the loopback
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = _free_port()
    node = ["--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats"]
    before = _listening()
    try:
        for args in (["--head", f"--port={port}", "--include-dashboard=false"],
                     [f"--address=127.0.0.1:{port}"]):
            res = subprocess.run([*NODE, "start", *args, *node], capture_output=True,
                                 text=True, timeout=180)
            assert res.returncode == 0, res.stderr[-2000:]
        opened = _listening() - before
        assert opened, "the cluster listens somewhere"
        assert {addr for addr, _ in opened} <= LOOPBACK, f"beyond 127.0.0.1: {opened}"
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*NODE, "stop", "--force"], capture_output=True, timeout=120)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _same_tree(a: Path, b: Path) -> None:
    """Every file under a and b present in both with the same bytes."""
    names_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    names_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert names_a == names_b
    differ = [n for n in names_a if not filecmp.cmp(a / n, b / n, shallow=False)]
    assert not differ, differ[:5]


def test_extraction_on_the_cluster_is_the_local_one(cluster: str, aligned_faces: Path,
                                                     tmp_path: Path) -> None:
    """dst as PNG frames (the first run interrupted with Ctrl-C midway, then resumed),
    then kept in its video: the same faces, metadata and manifests as the session's local
    extraction, byte for byte."""
    local = aligned_faces / "data_dst"
    ws = copy_workspace(aligned_faces, tmp_path / "png")
    shutil.rmtree(ws / "data_dst" / "aligned")
    (ws / "data_dst" / "faces.json").unlink()
    argv = ["-w", ws, "extract", "dst", "--no-debug", "--cluster", cluster]
    driver = subprocess.Popen([sys.executable, "-m", "facelab", *map(str, argv)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    aligned = ws / "data_dst" / "aligned"
    deadline = time.monotonic() + 120
    while (not aligned.is_dir() or len(list(aligned.glob("*.jpg"))) < 10) and \
            time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    done = len(list(aligned.glob("*.jpg")))
    assert driver.returncode != 0 and 10 <= done < 75, (driver.returncode, done, err)
    res = run_facelab(*argv)  # resumed: the rest only
    now = re.search(r"75 frames, (\d+) processed now", res.out)
    assert res.rc == 0 and now and 0 < int(now[1]) < 75, res.out + res.err  # not anew
    _same_tree(local / "aligned", ws / "data_dst" / "aligned")
    assert (local / "faces.json").read_bytes() == (ws / "data_dst" / "faces.json").read_bytes()

    kept = tmp_path / "video"
    kept.mkdir()
    put_video(kept, "dst", data_file("grid/speaker_a_1.mpg"))
    res = run_facelab("-w", kept, "video", "extract", "dst")
    assert res.rc == 0, res.err
    res = run_facelab("-w", kept, "extract", "dst", "--no-debug", "--cluster", cluster)
    assert res.rc == 0, res.err
    _same_tree(local / "aligned", kept / "data_dst" / "aligned")


def test_frames_written_by_the_cluster_are_the_local_ones(cluster: str, tmp_path: Path
                                                          ) -> None:
    """`video extract --cluster`: the workers index the video in parts, decode their
    pieces and encode the images; the same files (subsampled src, every dst frame as
    jpg, and dst kept in its video: its index), byte for byte, as a local run's; a rerun
    after losing some makes only those."""
    runs = {}
    for where in ("local", "cluster"):
        ws = tmp_path / where
        kept = tmp_path / f"{where}-kept"
        for w in (ws, kept):
            w.mkdir()
            put_video(w, "dst", data_file("grid/speaker_a_1.mpg"))
        put_video(ws, "src", data_file("grid/speaker_b.mpg"))
        more = ["--cluster", cluster] if where == "cluster" else []
        run = run_facelab if more else run_in_process  # the driver of a cluster: a process
        for w, args in ((ws, ["src", "--fps", "10"]), (ws, ["dst", "--frames", "jpg"]),
                        (kept, ["dst"])):
            res = run("-w", w, "video", "extract", *args, *more)
            assert res.rc == 0, res.err
        runs[where] = ws
    for side in ("data_src", "data_dst"):
        _same_tree(runs["local"] / side, runs["cluster"] / side)
    _same_tree(tmp_path / "local-kept" / "data_dst", tmp_path / "cluster-kept" / "data_dst")
    assert (tmp_path / "cluster-kept" / "data_dst" / "frames_index.json").is_file()
    src = runs["cluster"] / "data_src"
    assert 20 < len(list(src.glob("*.png"))) < 75
    for lost in sorted(src.glob("*.png"))[3:6]:
        lost.unlink()
    manifest = src / "frames.json"
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    res = run_facelab("-w", runs["cluster"], "video", "extract", "src", "--fps", "10",
                      "--cluster", cluster)
    assert res.rc == 0 and "(3 written now)" in res.out, res.out + res.err
    _same_tree(runs["local"] / "data_src", src)


def test_items_travel_with_their_piece_of_the_video_not_the_film(tmp_path: Path) -> None:
    """What the driver sends for a dst kept in its video: no worker gets the film; each
    item gets the piece that holds its frames (smaller than the film), and the workers'
    source reads those pieces."""
    from facelab.cluster.stages import PIECES, cluster_executor
    from facelab.video.index import build_index
    from facelab.video.segment import piece_span
    from facelab.video.source import VideoSource

    video = data_file("grid/speaker_a_1.mpg")
    source = VideoSource(video, build_index(video))
    ex = cluster_executor("auto", tmp_path, 2, source, init=print,
                          initargs=("options", source, tmp_path))
    assert video not in ex.inputs
    assert ex.initargs[1].pieces == tmp_path / PIECES and ex.initargs[0] == "options"
    covered = []
    for chunk in source.chunks(source.names):
        [(path, data)] = ex.item_inputs(chunk)
        span = piece_span(path.name)
        assert path.parent == tmp_path / PIECES and span is not None
        assert len(data) < video.stat().st_size
        covered += [n for n in chunk if source.ordinal(n) in span]
    ex.close()
    assert covered == source.names and len(source.chunks(source.names)) > 1


def test_a_killed_worker_costs_only_its_items(cluster: str, tmp_path: Path) -> None:
    """SIGKILL to one Ray worker in the middle of a map: its items run again on its
    restarted actor, every result comes back in order with its file written by the
    driver, and no item ran more than twice."""
    import ray

    from facelab.cluster.ray_executor import RayExecutor

    root, runs = tmp_path / "ws", tmp_path / "runs"
    root.mkdir()
    runs.mkdir()

    go = tmp_path / "go"

    def work(item: tuple[int, Path]) -> tuple[int, Path]:  # sent by value to the workers
        i, path = item
        (runs / f"{i}-{os.getpid()}").touch()  # same machine: a side channel for the test
        while i == 3 and not go.exists():  # the second worker's second item waits, to be
            time.sleep(0.01)  # killed inside it
        time.sleep(0.1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(i * i))
        return i, path

    items = [(i, root / "out" / f"{i}.txt") for i in range(12)]  # odd ones: the 2nd worker
    try:
        with RayExecutor(cluster, root, workers=2) as ex:
            pids = ex.pids()
            results = ex.map(work, items)
            got = [next(results)]  # (the map submits as it is iterated)
            deadline = time.monotonic() + 120
            while f"3-{pids[1]}" not in os.listdir(runs) and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(pids[1], signal.SIGKILL)  # inside item 3
            go.touch()
            got += list(results)
    finally:
        ray.shutdown()
    assert [i for i, _ in got] == list(range(12))
    assert [p for _, p in got] == [p for _, p in items]  # named as on the driver
    assert [p.read_text() for _, p in got] == [str(i * i) for i in range(12)]
    ran = Counter(name.split("-")[0] for name in os.listdir(runs))
    assert set(ran) == {str(i) for i in range(12)}
    assert ran["3"] == 2 and max(ran.values()) == 2, "the killed item ran again, once"
    assert not any(root.rglob("*.part*")), "no temporary file left"


def test_a_wrong_address_is_one_line(tmp_path: Path, aligned_faces: Path) -> None:
    ws = copy_workspace(aligned_faces, tmp_path / "ws")
    before = sorted(p.name for p in (ws / "data_dst" / "aligned").iterdir())
    res = run_facelab("-w", ws, "extract", "dst", "--force", "--cluster",
                      f"127.0.0.1:{_free_port()}")
    assert_one_line_error(res, "Could not join the Ray cluster")
    assert sorted(p.name for p in (ws / "data_dst" / "aligned").iterdir()) == before
    res = run_facelab("-w", ws, "extract", "dst", "--cluster", "no-port")
    assert_one_line_error(res, "HOST:PORT")


def test_merge_on_the_cluster_is_the_local_one(cluster: str, aligned_faces: Path,
                                               tmp_path: Path) -> None:
    """dst kept in its video, a tiny SAE: the result video merged by the cluster's workers
    (segments encoded there, sent back, joined with the audio here) and the PNG frames
    they merge (each signed there with the key sent in memory, its manifest filed in the
    workspace's store) are exactly the frames a local merge writes as PNGs."""
    import av
    import cv2
    import numpy as np

    from facelab.progress import NullReporter
    from facelab.provenance.credentials import read_file
    from facelab.train.trainer import TrainOptions, train
    from facelab.workspace import Workspace, list_images
    from tests.test_merge import TINY

    ws = Workspace(copy_workspace(aligned_faces, tmp_path / "ws"))
    frames = ws.frames_dir("dst")
    for p in [*list_images(frames), frames / "frames.json", ws.video_json]:
        p.unlink()
    assert run_facelab("-w", ws.root, "video", "extract", "dst").rc == 0
    train(ws, TrainOptions(model_name="warp", preset="sae", overrides=dict(TINY), batch_size=4,
                           target_iteration=1, preview_every=0, workers=0, precision="fp32"),
          NullReporter())
    out = tmp_path / "lossless.mp4"
    res = run_facelab("-w", ws.root, "merge", "--model-name", "warp", "--video-format",
                      "mp4-lossless", "--output", out, "--cluster", cluster)
    assert res.rc == 0, res.err
    # as the cluster's workers: one thread each (a prediction's float sums follow the
    # thread count)
    res = run_facelab("-w", ws.root, "merge", "--model-name", "warp", "--to-frames",
                      "--workers", "2")
    assert res.rc == 0, res.err
    pngs = list_images(ws.merged_dir)
    local = [cv2.imread(str(p)) for p in pngs]
    with av.open(str(out)) as c:
        streamed = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(streamed) == len(pngs) == 75
    for frame, png, image in zip(streamed, pngs, local, strict=True):
        assert np.array_equal(frame, image), png.name
    assert read_file(out).state == "valid"

    shutil.rmtree(ws.root / "credentials")
    res = run_facelab("-w", ws.root, "merge", "--model-name", "warp", "--to-frames",
                      "--force", "--cluster", cluster)
    assert res.rc == 0, res.err
    pngs = list_images(ws.merged_dir)
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(1, 76)]
    for png, image in zip(pngs, local, strict=True):
        assert np.array_equal(cv2.imread(str(png)), image), png.name
    assert {read_file(p).state for p in pngs[::15]} == {"valid"}
    assert len(list((ws.root / "credentials").rglob("*.c2pa"))) >= 75
