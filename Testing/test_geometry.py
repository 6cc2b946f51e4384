"""Volumes, crop placement, resampling and paste-back, with oblique and permuted affines."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fastsam3d_core.geometry import (
    CropGrid,
    Volume,
    crop_grid_around,
    extract_crop,
    resample,
    z_normalise,
)
from fastsam3d_core.geometry.crop import nearest_ras_axes
from fastsam3d_core.geometry.paste import logits_on_volume


def rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    a, b = [i for i in range(3) if i != axis]
    matrix = np.eye(3)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


def oblique_affine(spacing=(0.8, 1.1, 2.5), origin=(-40.0, 25.0, 12.0)) -> np.ndarray:
    """Axis-permuted (i→S, j→R, k→-A), then rotated 20° and 10°: what the old extension broke."""
    permutation = np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0]], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = rotation(0, 20) @ rotation(2, 10) @ permutation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


@pytest.mark.parametrize(
    "array,message",
    [
        (np.zeros((4, 4)), "3-D scalar"),
        (np.zeros((4, 4, 4, 2)), "3-D scalar"),
        (np.zeros((0, 4, 4)), "empty"),
        (np.array([["a"]], dtype=object).reshape(1, 1, 1), "numbers"),
    ],
)
def test_volume_rejects_bad_arrays(array, message):
    with pytest.raises(ValueError, match=message):
        Volume(array, np.eye(4))


@pytest.mark.parametrize(
    "affine,message",
    [
        (np.eye(3), "4×4"),
        (np.diag([1.0, 1.0, 0.0, 1.0]), "singular"),
        (np.ones((4, 4)), "last row"),
    ],
)
def test_volume_rejects_bad_affines(affine, message):
    with pytest.raises(ValueError, match=message):
        Volume(np.zeros((2, 2, 2)), affine)


def test_geometry_properties_and_round_trip():
    volume = Volume(np.zeros((10, 12, 14), np.int16), oblique_affine())
    np.testing.assert_allclose(volume.spacing, [0.8, 1.1, 2.5])
    np.testing.assert_allclose(volume.direction.T @ volume.direction, np.eye(3), atol=1e-12)
    points = np.random.default_rng(0).uniform(-1, 12, (20, 3))
    np.testing.assert_allclose(volume.ras_to_index(volume.index_to_ras(points)), points, atol=1e-9)
    assert volume.contains_index([9.4, 0, -0.5]) and not volume.contains_index([9.5, 0, 0])


def test_nearest_ras_axes_undo_permutation_and_flips():
    axes, signs = nearest_ras_axes(Volume(np.zeros((2, 2, 2)), oblique_affine()).direction)
    # R is j (+), A is k (-), S is i (+) before the small rotations.
    assert axes.tolist() == [1, 2, 0] and signs.tolist() == [1, -1, 1]


def test_crop_axes_follow_ras_at_1_5_mm():
    volume = Volume(np.zeros((300, 300, 100)), oblique_affine())
    grid = crop_grid_around(volume, volume.index_to_ras(np.array([150, 150, 50])))
    columns = grid.crop_to_ras[:3, :3]
    np.testing.assert_allclose(np.linalg.norm(columns, axis=0), 1.5)
    assert np.all(np.diag(columns) > 1.0), "crop axis a should point along +RAS axis a"


def test_crop_stays_inside_a_large_volume_and_contains_the_click():
    volume = Volume(np.zeros((400, 400, 300)), np.diag([0.7, 0.7, 1.0, 1.0]))
    corner_click = volume.index_to_ras(np.array([2.0, 398.0, 150.0]))
    grid = crop_grid_around(volume, corner_click)
    assert grid.contains(corner_click)
    lo = volume.ras_to_index(grid.crop_to_ras[:3, 3] - 0.75)  # crop's first edge, in ijk
    hi = volume.ras_to_index(grid.crop_to_ras[:3, 3] + 0.75 + 127 * 1.5)
    assert np.all(np.minimum(lo, hi)[:2] >= -0.5 - 1e-6)
    assert np.all(np.maximum(lo, hi)[:2] <= np.array([399.5, 399.5]) + 1e-6)


@pytest.mark.parametrize(
    "shape, affine",
    [
        ((512, 512, 300), np.diag([0.7, 0.7, 1.0, 1.0])),  # 358.4 mm: not a multiple of 1.5 mm
        ((200, 60, 301), np.diag([-1.0, -1.0, 0.8, 1.0])),  # LPS-like flips
        ((300, 300, 100), oblique_affine()),
    ],
)
def test_every_voxel_of_a_large_volume_lies_in_the_crop_around_it(shape, affine):
    # Snapping the crop to the 1.5 mm lattice must never push the click out of its own crop,
    # or the high edge of the volume could not be segmented.
    volume = Volume(np.zeros(shape, dtype=np.float32), affine)
    edges = [np.unique(np.r_[0:3, n // 2, n - 3 : n]) for n in shape]
    for index in np.array(np.meshgrid(*edges, indexing="ij")).reshape(3, -1).T:
        click = volume.index_to_ras(index.astype(float))
        assert crop_grid_around(volume, click).contains(click), f"voxel {index.tolist()}"


def test_crop_of_a_1_5_mm_volume_needs_no_interpolation():
    rng = np.random.default_rng(1)
    array = rng.uniform(1, 100, (140, 150, 130)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    volume = Volume(array, affine)
    crop = extract_crop(
        volume, crop_grid_around(volume, volume.index_to_ras(np.array([70, 75, 65])))
    )
    start = np.round(volume.ras_to_index(crop.affine[:3, 3])).astype(int)
    window = array[tuple(slice(s, s + 128) for s in start)]
    expected = (window - window.mean()) / window.std(ddof=1)
    np.testing.assert_allclose(crop.image, expected, rtol=1e-4, atol=1e-4)


def test_z_normalise_uses_unbiased_std_of_positive_voxels():
    window = np.array([-1000.0, -5.0, 0.0, 10.0, 20.0, 60.0], dtype=np.float32)
    foreground = np.array([10.0, 20.0, 60.0])
    expected = (window - foreground.mean()) / foreground.std(ddof=1)
    np.testing.assert_allclose(z_normalise(window), expected, rtol=1e-6)
    assert np.array_equal(z_normalise(np.zeros(5)), np.zeros(5, np.float32))


def test_resample_identity_and_outside():
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = oblique_affine()
    values, inside = resample(array, affine, affine, array.shape)
    np.testing.assert_allclose(values, array, rtol=1e-5, atol=1e-3)
    assert inside.all()
    far = affine.copy()
    far[:3, 3] += 1000
    values, inside = resample(array, affine, far, (3, 3, 3))
    assert not inside.any() and not values.any()


def test_paste_back_puts_a_crop_voxel_at_its_ras_position():
    volume = Volume(np.zeros((90, 80, 70), np.int16), oblique_affine())
    grid = crop_grid_around(volume, volume.index_to_ras(np.array([45, 40, 35])))
    logits = -np.ones((128, 128, 128), np.float32)
    target = np.array([60, 70, 50])
    logits[tuple(target)] = 1000.0  # one hot voxel; trilinear spread stays within ±1 crop voxel
    box = logits_on_volume(logits, grid, volume)
    positive = np.argwhere(box.inside & (box.values > 0)) + box.lo
    assert len(positive) > 0
    distance = np.linalg.norm(
        volume.index_to_ras(positive) - grid.crop_to_ras[:3] @ [*target, 1], axis=1
    )
    assert distance.max() <= 1.5 * np.sqrt(3) + 1e-6


def test_crop_grid_key_identifies_placement():
    a = CropGrid(np.diag([1.5, 1.5, 1.5, 1.0]))
    b = CropGrid(np.diag([1.5, 1.5, 1.5, 1.0]))
    shifted = np.diag([1.5, 1.5, 1.5, 1.0])
    shifted[0, 3] = 0.5
    assert a.key() == b.key() != CropGrid(shifted).key()


@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_separable_and_general_resampling_agree(mode):
    """Parallel axes take the separable path; a 1e-6° turn forces the general one."""
    rng = np.random.default_rng(3)
    array = rng.normal(size=(20, 24, 18)).astype(np.float32)
    source_to_ras = oblique_affine()
    target_to_ras = source_to_ras @ np.diag([0.7, 1.3, 0.9, 1.0])
    target_to_ras[:3, 3] += (2.0, -3.0, 1.0)
    turned = target_to_ras.copy()
    turned[:3, :3] = rotation(1, 1e-6) @ turned[:3, :3]
    fast, fast_inside = resample(array, source_to_ras, target_to_ras, (25, 20, 22), mode=mode)
    slow, slow_inside = resample(array, source_to_ras, turned, (25, 20, 22), mode=mode)
    assert np.array_equal(fast_inside, slow_inside) and 0 < fast_inside.sum() < fast_inside.size
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)


def test_geometry_imports_no_layer_above_it_and_io_reads_its_volumes():
    """geometry is the lowest layer: importing it pulls in neither io (nor SimpleITK) nor the
    package's public names (serving, session, torch), and a Volume has no way to read a file;
    io, above it, reads files into Volumes."""
    script = (
        "import sys\n"
        "from fastsam3d_core.examples import example_ct_path\n"
        "from fastsam3d_core.geometry import Volume\n"
        "above = ('fastsam3d_core.io', 'SimpleITK', 'fastsam3d_core.serving',\n"
        "         'fastsam3d_core.session', 'fastsam3d_core.models', 'torch')\n"
        "print([name for name in above if name in sys.modules])\n"
        "print([name for name in vars(Volume) if 'file' in name or 'read' in name])\n"
        "from fastsam3d_core.io import read_volume\n"
        "volume = read_volume(example_ct_path())\n"
        "print(type(volume) is Volume, volume.shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "[]", "True (122, 101, 30)"]
