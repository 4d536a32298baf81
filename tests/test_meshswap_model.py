"""The meshswap model on real GRID faces: built from a faceset, its candidates blend
continuously, the refiner's training pairs never pair a face with itself or its neighbours
in time, an untrained refiner returns the warp in dst's shading, and a few steps lower the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facelab.errors import FacelabError
from facelab.meshswap.model import EXCLUDE_FRAMES, MeshSwapModel, build, model_counts
from facelab.meshswap.options import MeshSwapOptions, fixed_of
from facelab.meshswap.refiner import shading
from facelab.train.data import Faceset
from tests.test_meshswap import Person, grid  # noqa: F401  (the module's GRID fixture)

pytestmark = pytest.mark.slow  # the fixture extracts two clips


@pytest.fixture(scope="module")
def built(grid) -> tuple[MeshSwapModel, Faceset]:  # noqa: F811
    opts = MeshSwapOptions(resolution=96, refiner=True, refiner_dims=8, batch_size=4)
    src = Faceset(grid["src"].folder, opts.resolution, opts.face_type)
    return build(src, grid["dst"].metas, opts), src


def test_build_stores_crops_meshes_and_neutrals(built):
    model, src = built
    assert model.faces == len(src) == 75 and model.points == 478
    assert model.src_crops.dtype == torch.uint8 and model.src_crops.shape[1:] == (96, 96, 3)
    assert model.src_crops.float().std() > 20  # real pixels, not zeros
    inside = (model.src_meshes[..., :2] >= 0) & (model.src_meshes[..., :2] < 96)
    assert inside.float().mean() > 0.95  # meshes in crop pixels
    assert torch.isfinite(model.src_neutral).all() and model.dst_neutral.abs().sum() > 0
    assert model_counts({**fixed_of(model.opts), **model.counts()}) == (75, 478)
    with pytest.raises(FacelabError, match="damaged"):
        model_counts({})


def test_weights_enter_and_leave_at_zero(built):
    model, _ = built
    desc = model.src_desc.numpy()
    q = desc[10]
    chosen, w = model.choose(q[None], 3)
    assert chosen.shape == w.shape == (1, 3) and np.isclose(w.sum(), 1)
    assert chosen[0, 0] == 10 and w[0, 0] > w[0, 2] >= 0
    # moving the query a little moves the weights a little: no jump when a candidate enters
    # or leaves the set, so a finer path has proportionally smaller steps
    def biggest_step(n: int) -> float:
        path = np.linspace(desc[10], desc[40], n)
        chosen, ws = model.choose(path, 3)
        full = np.zeros((n, model.faces))
        np.put_along_axis(full, chosen, ws, 1)
        return float(np.abs(np.diff(full, axis=0)).max())

    assert biggest_step(2000) < biggest_step(200) / 4


def test_training_pairs_never_use_the_face_or_its_neighbours(built):
    model, _ = built
    rng = np.random.default_rng(0)
    idx = rng.integers(0, model.faces, 32)
    frames = model.src_frame.numpy()
    exclude = np.abs(frames[idx, None] - frames[None]) <= EXCLUDE_FRAMES
    chosen, w = model.choose(model.src_desc.numpy()[idx], 4, exclude)
    used = np.take_along_axis(exclude, chosen, 1) & (w > 0)
    assert not used.any()
    batch = model.train_batch(np.random.default_rng(1), 4)
    assert batch["input"].shape == (4, 7, 96, 96) and batch["target"].shape == (4, 3, 96, 96)


def test_untrained_refiner_returns_the_shaded_warp_and_steps_lower_the_loss(built, grid):  # noqa: F811
    model, _ = built
    torch.manual_seed(0)
    batch = model.train_batch(np.random.default_rng(2), 4)
    base = (batch["warp"] - shading(batch["warp"]) + batch["input"][:, 3:6]).clamp(0, 1)
    assert torch.allclose(model.refine(batch), base, atol=1e-6)
    assert torch.allclose(batch["input"][:, :3], batch["warp"])
    opt = torch.optim.Adam(model.refiner.parameters(), 2e-3)
    first = model.loss(batch).item()
    for _ in range(30):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.loss(batch).item() < first * 0.95


def test_swap_puts_src_pixels_on_dst_geometry(built, grid):  # noqa: F811
    model, _ = built
    dst = Faceset(grid["dst"].folder, 96, model.opts.face_type)
    from facelab.train.warp import Augment

    crops = np.stack([dst.render(i, Augment()).target.transpose(1, 2, 0) for i in (0, 30)])
    meshes = []
    for i in (0, 30):
        mat = dst.face_to_crop(i)
        m = dst.metas[i].mesh.astype(np.float64)
        meshes.append(np.c_[m[:, :2] @ mat[:, :2].T + mat[:, 2],
                            m[:, 2] * np.sqrt(abs(np.linalg.det(mat[:, :2])))])
    yaw = np.array([dst.metas[i].yaw for i in (0, 30)])
    pitch = np.array([dst.metas[i].pitch for i in (0, 30)])
    faces, masks = model.swap(crops.astype(np.float32), np.stack(meshes), yaw, pitch)
    assert faces.shape == (2, 96, 96, 3) and masks.shape == (2, 96, 96)
    assert 0.2 < masks.mean() < 0.9
    inside = masks > 0.5
    # src's skin, not dst's: the face region differs from dst's crop
    assert np.abs(faces - crops)[inside].mean() > 0.02


def test_a_tiny_src_faceset_is_one_line(grid, tmp_path):  # noqa: F811
    import shutil

    folder = tmp_path / "few"
    folder.mkdir()
    for p in sorted(grid["src"].folder.glob("*.jpg"))[:5]:
        shutil.copy(p, folder / p.name)
    opts = MeshSwapOptions(resolution=64)
    with pytest.raises(FacelabError, match="at least 20"):
        build(Faceset(folder, 64, opts.face_type), grid["dst"].metas, opts)


def test_shade_gives_the_warp_dst_lighting(built, grid):  # noqa: F811
    """Without a refiner, `shade` exchanges the warp's low frequencies for dst's: the
    result's blur is dst's blur, where the plain warp keeps src's lighting."""
    from dataclasses import replace

    from facelab.train.warp import Augment

    model, _ = built
    tensors = {k: v for k, v in model.state_dict().items() if not k.startswith("refiner.")}

    def variant(shade: bool) -> MeshSwapModel:
        m = MeshSwapModel(replace(model.opts, refiner=False, shade=shade), model.faces,
                          model.points)
        m.load_state_dict(tensors)
        return m

    dst = Faceset(grid["dst"].folder, 96, model.opts.face_type)
    crop = dst.render(3, Augment()).target.transpose(1, 2, 0)[None].copy()
    mat = dst.face_to_crop(3)
    mesh = dst.metas[3].mesh.astype(np.float64)
    mesh = np.c_[mesh[:, :2] @ mat[:, :2].T + mat[:, 2],
                 mesh[:, 2] * np.sqrt(abs(np.linalg.det(mat[:, :2])))][None]
    pose = (np.array([dst.metas[3].yaw]), np.array([dst.metas[3].pitch]))
    plain, mask = variant(False).swap(crop, mesh, *pose)
    shaded, _ = variant(True).swap(crop, mesh, *pose)
    blur = lambda a: shading(torch.from_numpy(a.transpose(0, 3, 1, 2).copy())).numpy()  # noqa: E731
    inside = np.broadcast_to(mask[:, None] > 0.5, blur(crop).shape)
    err = lambda a: np.abs(blur(a) - blur(crop))[inside].mean()  # noqa: E731
    assert err(shaded) < 0.5 * err(plain)
    assert np.abs(shaded - plain)[mask > 0.5].mean() > 0.005
