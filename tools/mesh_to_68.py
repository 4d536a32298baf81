"""Build and measure the FaceMesh 478 → iBUG 68 map and the pose tables.

Run from the project root (about a minute on 2 CPU cores):

    .venv/bin/python tools/mesh_to_68.py [--out /tmp/tables.py]

What it does, against dlib's 68-point predictor as the reference (a model, not truth):
1. every frame of the five GRID clips and the Pexels clip: dlib HOG box, dlib's 68 points in
   it, and FaceMesh in a crop of the same box (`MeshLandmarker.mesh`, what facelab runs);
2. per iBUG point, a convex combination of its 4 nearest mesh vertices (least squares,
   weights ≥ 0 summing to 1, tiny weights dropped) fitted on GRID speakers A and B only;
3. the jaw's arc fractions and radial scales along the mesh's visible outline (medians on
   the same frames);
4. the pose tables: a mirror pairing of the mesh vertices, the 200 vertices that move least
   over all clips (speech, expressions), the symmetric Procrustes mean of the GRID meshes on
   them, and the 3D model of points 17–47 through the map;
5. prints the tables as Python (paste into landmarks.py and pose.py), then the error per
   region / inter-ocular distance (outer eye corners 36–45) on every clip, held-out
   speakers C, D and the Pexels clip (by |yaw|) included.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import dlib
import numpy as np

from facelab.faces import pose
from facelab.faces.landmarks import (
    create_landmarker,
    jaw_contour_coords,
    mesh_to_68,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIPS = {"a1": "grid/speaker_a_1.mpg", "a2": "grid/speaker_a_2.mpg", "b": "grid/speaker_b.mpg",
         "c": "grid/speaker_c.mpg", "d": "grid/speaker_d.mpg",
         "pexels": "pexels/woman_pose_variety.mp4"}
TRAIN = ("a1", "a2", "b")
GRID = ("a1", "a2", "b", "c", "d")
#: Mouth-corner vertices that sit within a pixel of each other: paired by the mesh's topology.
LIP_FIX = [(78, 308), (62, 292), (96, 325), (77, 307)]
MIRROR_68 = [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
             45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
             54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36),
           "eyes": range(36, 48), "mouth": range(48, 68)}


def collect() -> dict[str, dict[str, np.ndarray]]:
    det = dlib.get_frontal_face_detector()
    ref, mesh = create_landmarker("dlib"), create_landmarker("mesh")
    out = {}
    for key, rel in CLIPS.items():
        with av.open(str(DATA / rel)) as box:
            frames = [f.to_ndarray(format="bgr24") for f in box.decode(video=0)]
        d68, meshes = [], []
        for img in frames:
            img = np.ascontiguousarray(img)
            rects = det(np.ascontiguousarray(img[:, :, ::-1]), 0)
            if not rects:
                continue
            r = max(rects, key=lambda r: r.area())
            bx = (r.left(), r.top(), r.right(), r.bottom())
            m = mesh.mesh(img, bx)
            if m is None:
                continue
            d68.append(ref.fit(img, bx).points68)
            meshes.append(m)
        out[key] = {"d68": np.array(d68), "mesh": np.array(meshes)}
        print(f"# {key}: {len(frames)} frames, {len(d68)} with a dlib face and a mesh",
              file=sys.stderr)
    return out


def iod(d68: np.ndarray) -> np.ndarray:
    return np.linalg.norm(d68[:, 36] - d68[:, 45], axis=1)


def simplex_ls(a: np.ndarray, b: np.ndarray, iters: int = 3000) -> np.ndarray:
    """min |a·w − b|², w ≥ 0, Σw = 1 (accelerated projected gradient)."""
    def project(v: np.ndarray) -> np.ndarray:
        u = np.sort(v)[::-1]
        css = np.cumsum(u) - 1
        rho = np.nonzero(u - css / (np.arange(len(v)) + 1) > 0)[0][-1]
        return np.maximum(v - css[rho] / (rho + 1), 0)
    lip = np.linalg.norm(a, 2) ** 2 + 1e-12
    w = np.full(a.shape[1], 1 / a.shape[1])
    y, t = w.copy(), 1.0
    for _ in range(iters):
        wn = project(y - a.T @ (a @ y - b) / lip)
        tn = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y, w, t = wn + (t - 1) / tn * (wn - w), wn, tn
    return w


def fit_weights(m: np.ndarray, r: np.ndarray, k: int = 4) -> list[list[tuple[int, float]]]:
    """Per point, weights over its k nearest mesh vertices; the iris (468–477) is left out,
    as it moves with the gaze, not with the eyelids."""
    io = iod(r)
    table = []
    for p in range(68):
        dist = (np.linalg.norm(m[:, :468, :2] - r[:, p, None], axis=2) / io[:, None]).mean(0)
        cands = np.argsort(dist)[:k]
        base = m[:, cands[0], :2]
        a = ((m[:, cands, :2] - base[:, None]) / io[:, None, None]).transpose(0, 2, 1)
        w = simplex_ls(a.reshape(-1, k), ((r[:, p] - base) / io[:, None]).reshape(-1))
        w = np.where(w > 0.02, w, 0)
        w = np.round(w / w.sum(), 3)
        w[np.argmax(w)] += 1 - w.sum()
        table.append([(int(c), float(x)) for c, x in zip(cands, w, strict=True) if x > 0])
    return table


def mirrored(m: np.ndarray, r: np.ndarray, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same frames flipped left-right (points renamed), so the map comes out symmetric."""
    m2, r2 = m[:, perm].copy(), r[:, MIRROR_68].copy()
    m2[..., 0] *= -1
    r2[..., 0] *= -1
    return m2, r2


def dense(table: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    idx, w = np.zeros((68, 4), np.int64), np.zeros((68, 4))
    for p, row in enumerate(table):
        for j, (v, x) in enumerate(row):
            idx[p, j], w[p, j] = v, x
    return idx, w


def mirror_pairs(ref: np.ndarray) -> np.ndarray:
    """Involution P with ref[P] ≈ ref mirrored: greedy mutual matching, closest pairs first,
    re-aligning the mirror image with the pairing found."""
    mir = ref * [-1, 1, 1]
    moved = mir - mir.mean(0) + ref.mean(0)  # first guess: mirrored about the mean's x
    for _ in range(4):
        dist = np.linalg.norm(moved[:, None] - ref[None], axis=2)
        dist = (dist + dist.T) / 2
        perm = np.full(len(ref), -1)
        for flat in np.argsort(dist, axis=None):
            i, j = divmod(int(flat), len(ref))
            if perm[i] < 0 and perm[j] < 0:
                perm[i], perm[j] = j, i
        for a, b in LIP_FIX:
            perm[a], perm[b] = b, a
        rot, s, t = pose.umeyama3(mir[perm], ref)
        moved = (s * (rot @ mir.T)).T + t
    assert (perm[perm] == np.arange(len(ref))).all(), "mirror pairing is not an involution"
    return perm


def align_all(meshes: np.ndarray, ref: np.ndarray, rig: np.ndarray) -> np.ndarray:
    out = []
    for x in meshes:
        rot, s, t = pose.umeyama3(x[rig], ref[rig])
        out.append((s * (rot @ x.T)).T + t)
    return np.array(out)


def normalise(x: np.ndarray, rig: np.ndarray) -> np.ndarray:
    x = x - x[rig].mean(0)
    return x / np.sqrt((x[rig] ** 2).sum(1).mean())


def canonical(meshes: np.ndarray, rig: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Symmetric Procrustes mean, oriented as the raw (camera-frame) mean of the frames."""
    raw = normalise((meshes - meshes.mean(1, keepdims=True)).mean(0), rig)
    ref = raw
    for _ in range(6):
        mean = normalise(align_all(meshes, ref, rig).mean(0), rig)
        rot, _, t = pose.umeyama3(mean[rig], raw[rig])
        ref = (rot @ mean.T).T + t
    mir = (ref * [-1, 1, 1])[perm]
    rot, s, t = pose.umeyama3(mir[rig], ref[rig])
    sym = (ref + (s * (rot @ mir.T)).T + t) / 2
    diff = sym - sym[perm]
    normal = np.linalg.svd(diff[np.linalg.norm(diff, axis=1) > 1e-9], full_matrices=False)[2][0]
    normal *= np.sign(normal[0])
    v, c = np.cross(normal, [1.0, 0, 0]), float(normal[0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    turn = np.eye(3) + vx + vx @ vx / (1 + c)  # the symmetry plane becomes x = 0
    return normalise((turn @ sym.T).T, rig)


def stable_vertices(meshes: np.ndarray, perm: np.ndarray, n: int = 200) -> np.ndarray:
    rig = np.arange(468)
    for _ in range(6):
        ref = normalise(meshes[0], rig)
        for _ in range(4):
            aligned = align_all(meshes, ref, rig)
            ref = normalise(aligned.mean(0), rig)
        res = np.sqrt(((aligned - aligned.mean(0)) ** 2).sum(2).mean(0))[:468]
        res = np.maximum(res, res[perm[:468]])
        rig = np.sort(np.argsort(res)[:n])
    return rig


def fmt_rows(values: list[str], per_line: int, indent: str = "    ") -> str:
    lines = [", ".join(values[i:i + per_line]) for i in range(0, len(values), per_line)]
    return "\n".join(indent + ln + "," for ln in lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the tables here (default: stdout)")
    ap.add_argument("--cache", type=Path, help="keep the collected points in this .npz")
    args = ap.parse_args()
    if args.cache and args.cache.is_file():
        with np.load(args.cache) as z:
            data = {k: {"d68": z[f"{k}_d68"], "mesh": z[f"{k}_mesh"]} for k in CLIPS}
    else:
        data = collect()
        if args.cache:
            np.savez_compressed(args.cache, **{f"{k}_{n}": v for k, d in data.items()
                                               for n, v in d.items()})
    grid_meshes = np.concatenate([data[k]["mesh"] for k in GRID])
    all_meshes = np.concatenate([data[k]["mesh"] for k in CLIPS])
    perm = mirror_pairs(normalise(grid_meshes.mean(0), np.arange(468)))
    m_tr = np.concatenate([data[k]["mesh"] for k in TRAIN])
    r_tr = np.concatenate([data[k]["d68"] for k in TRAIN])
    m_fl, r_fl = mirrored(m_tr, r_tr, perm)
    m_tr, r_tr = np.concatenate([m_tr, m_fl]), np.concatenate([r_tr, r_fl])
    table = fit_weights(m_tr, r_tr)
    idx, w = dense(table)
    coords = [jaw_contour_coords(m[:, :2], (m[idx, :2] * w[..., None]).sum(1), r[:17])
              for m, r in zip(m_tr, r_tr, strict=True)]
    arc = np.round(np.median([c[0] for c in coords], 0), 4)
    scale = np.round(np.median([c[1] for c in coords], 0), 4)

    rig = stable_vertices(all_meshes, perm)
    canon = canonical(grid_meshes, rig, perm)
    model = (canon[idx] * w[..., None]).sum(1)[17:48]
    model = (model + (model * [-1, 1, 1])[[p - 17 for p in MIRROR_68[17:48]]]) / 2

    cells = [f"({', '.join(f'({v}, {x:g})' for v, x in row)}{',' * (len(row) == 1)}),"
             for row in table]
    rows, first = [], 0
    for p in range(1, 69):  # pack points onto lines of ≤ 100 characters, numbered
        line = " ".join(cells[first:p + 1])
        if p == 68 or len(f"    {line}  # {first}–{p}") > 100:
            ids = f"{first}" if p - 1 == first else f"{first}–{p - 1}"
            rows.append(f"{' '.join(cells[first:p])}  # {ids}")
            first = p
    lm_text = [
        "#: iBUG point → ((FaceMesh vertex, weight), ...); weights ≥ 0 summing to 1 (measured).",
        "MESH_TO_68: tuple[tuple[tuple[int, float], ...], ...] = (",
        *("    " + r for r in rows), ")",
        "#: Jaw points 0–8 at these fractions of the outline's arc from point 0 to the chin, "
        "9–16",
        "#: from the chin to point 16, then scaled about the mesh centre (measured).",
        "JAW_ARC = np.array([", fmt_rows([f"{x:.4f}" for x in arc], 9), "])",
        "JAW_SCALE = np.array([", fmt_rows([f"{x:.4f}" for x in scale], 9), "])"]
    pose_text = [
        "#: FaceMesh vertices for the rigid fit: the 200 that move least (symmetric set).",
        "RIGID: tuple[int, ...] = (", fmt_rows([str(i) for i in rig], 16), ")",
        "#: Canonical coordinates of `RIGID` (x right, y down, z away; RMS radius 1).",
        "CANON = np.array([",
        fmt_rows([f"[{x:.3f}, {y:.3f}, {z:.3f}]" for x, y, z in canon[rig]], 3), "])",
        "#: 3D model of iBUG points 17–47 in `CANON`'s frame, through the mesh → 68 map.",
        "MODEL_17_47 = np.array([",
        fmt_rows([f"[{x:.3f}, {y:.3f}, {z:.3f}]" for x, y, z in model], 3), "])"]
    text = ["# --- landmarks.py ---", *lm_text, "# --- pose.py ---", *pose_text]
    if args.out:
        args.out.write_text("\n".join(text) + "\n")
    else:
        print("\n".join(text))

    # measure with the fitted tables (pose from the freshly built canonical mesh)
    pose.RIGID, pose.CANON, pose.MODEL_17_47 = tuple(int(i) for i in rig), canon[rig], model
    print("\nerror / inter-ocular distance (dlib = reference); train = A, B")
    print(f"{'clip':14s} {'n':>4s} " + " ".join(f"{r:>6s}" for r in [*REGIONS, "all"]))
    for key, d in data.items():
        pred = np.array([mesh_to_68(m, idx, w, arc, scale) for m in d["mesh"]])
        err = np.linalg.norm(pred - d["d68"], axis=2) / iod(d["d68"])[:, None]
        groups = [(key, np.ones(len(err), bool))]
        if key == "pexels":
            yaw = np.abs([pose.mesh_pose(m)[0] for m in d["mesh"]])
            groups += [(f"  |yaw| {lo}-{hi}", (yaw >= lo) & (yaw < hi))
                       for lo, hi in ((0, 5), (5, 10), (10, 20), (20, 90))]
        for name, sel in groups:
            if sel.any():
                cells = [err[sel][:, list(ix)].mean() for ix in REGIONS.values()]
                print(f"{name:14s} {sel.sum():4d} "
                      + " ".join(f"{x:6.4f}" for x in [*cells, err[sel].mean()]))


if __name__ == "__main__":
    main()
