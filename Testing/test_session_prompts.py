"""Boxes, scribbles and lassos in the core session, on a real CT with the seeded FastSAM3D: each
is one interaction, a positive box never leaves its box, a lasso's slice is exactly what was
drawn, and bad drawings are refused in one line with nothing changed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED
from matplotlib.path import Path as PolygonPath

from fastsam3d_core.geometry import Volume
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import Session
from fastsam3d_core.session.shapes import lasso_fill

DATA = SHARED / "data" / "totalseg_ct"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test scans not found at {DATA}")
LIVER = 5


@pytest.fixture(scope="module")
def ct() -> tuple[Volume, np.ndarray]:
    image = read_volume(DATA / "example_ct_3mm.nii.gz")
    labels = read_volume(DATA / "example_seg_3mm.nii.gz")
    return image, labels.array == LIVER


@pytest.fixture
def session(ct, fastsam3d_seeded) -> Session:
    return Session(ct[0], fastsam3d_seeded)


def liver_box(image: Volume, liver: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """RAS corners of the liver's voxel bounding box, and that box's index slices."""
    where = np.argwhere(liver)
    lo, hi = where.min(axis=0), where.max(axis=0)
    corners = image.index_to_ras(np.stack([lo, hi]).astype(float))
    return corners[0], corners[1], tuple(slice(a, b + 1) for a, b in zip(lo, hi))


def circle(image: Volume, centre_ij, radius: float, k: int, count: int = 24) -> np.ndarray:
    """A closed contour on slice k (RAS), its vertices off the voxel centres."""
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False) + 0.1
    ij = np.stack([centre_ij[0] + radius * np.cos(angles), centre_ij[1] + radius * np.sin(angles)])
    index = np.concatenate([ij.T + 0.13, np.full((count, 1), float(k))], axis=1)
    return image.index_to_ras(index)


def filled_slice(image: Volume, contour_ras: np.ndarray, k: int) -> np.ndarray:
    """The voxels of slice k whose centres the contour encloses, by matplotlib (an independent
    polygon test)."""
    polygon = PolygonPath(image.ras_to_index(contour_ras)[:, :2])
    i, j = np.meshgrid(*[np.arange(n) for n in image.shape[:2]], indexing="ij")
    inside = polygon.contains_points(np.stack([i.ravel(), j.ravel()], axis=1))
    return inside.reshape(image.shape[:2])


def test_a_positive_box_keeps_its_result_inside_the_box(session, ct):
    image, liver = ct
    corner_a, corner_b, box = liver_box(image, liver)
    result = session.add_box(corner_a, corner_b)
    mask = session.mask().astype(bool)
    assert mask.any() and result.encoder_ran
    outside = mask.copy()
    outside[box] = False
    assert not outside.any()
    assert [p.kind for p in session.prompts()] == ["box"] and session.clicks() == []


def test_a_box_drawn_on_a_slice_is_one_slice_thick(session, ct):
    image, liver = ct
    corner_a, corner_b, box = liver_box(image, liver)
    k = (box[2].start + box[2].stop) // 2
    slice_s = image.index_to_ras(np.array([0.0, 0.0, k]))[2]
    corner_a[2] = corner_b[2] = slice_s  # a rectangle in the axial view: no depth
    session.add_box(corner_a, corner_b)
    mask = session.mask().astype(bool)
    assert mask[:, :, k].any()
    mask[box[0], box[1], k] = False
    assert not mask.any()


def test_a_box_larger_than_a_crop_opens_crops_covering_it(session, ct):
    image, _ = ct
    corners = image.index_to_ras(np.array([[0.0, 0.0, 0.0], np.array(image.shape) - 1.0]))
    session.add_box(corners[0], corners[1])
    grids = [crop.grid for crop in session.current_segment.crops]
    assert len(grids) > 1  # 363 × 300 mm: more than one 192 mm crop
    assert all(crop.bound is not None for crop in session.current_segment.crops)


def test_a_positive_lasso_sets_its_slice_exactly_and_a_negative_one_clears_it(session, ct):
    image, liver = ct
    session.add_box(*liver_box(image, liver)[:2])
    k = 15
    centre = np.argwhere(liver[:, :, k]).mean(axis=0)
    contour = circle(image, centre, 9.0, k)
    session.add_lasso(contour)
    expected = filled_slice(image, contour, k)
    assert expected.sum() > 200
    np.testing.assert_array_equal(session.mask()[:, :, k].astype(bool), expected)
    smaller = circle(image, centre + 2, 4.0, k)
    session.add_lasso(smaller, positive=False)
    cleared = filled_slice(image, smaller, k)
    np.testing.assert_array_equal(session.mask()[:, :, k].astype(bool), expected & ~cleared)


def test_the_polygon_fill_matches_matplotlib_on_irregular_contours(ct):
    image, _ = ct
    rng = np.random.default_rng(7)
    for _ in range(20):
        count = int(rng.integers(5, 40))
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = rng.uniform(3, 30, count)  # star-shaped around the centre: never self-crossing
        ij = np.stack([60 + radii * np.cos(angles), 50 + radii * np.sin(angles)], axis=1)
        contour = image.index_to_ras(np.concatenate([ij, np.full((count, 1), 7.0)], axis=1))
        fill = lasso_fill(image, contour)
        ours = np.zeros(image.shape[:2], bool)
        ours[fill.lo[0] : fill.hi[0], fill.lo[1] : fill.hi[1]] = fill.inside[:, :, 0]
        np.testing.assert_array_equal(ours, filled_slice(image, contour, 7))


def test_undo_after_a_scribble_restores_the_mask_bit_for_bit(session, ct):
    image, liver = ct
    session.add_point(image.index_to_ras(np.argwhere(liver)[len(np.argwhere(liver)) // 2]))
    before = session.mask().copy()
    stroke = image.index_to_ras(np.array([[50.0, 40.0, 15.0], [60.0, 50.0, 16.0], [70, 48, 17]]))
    after = session.add_scribble(stroke, positive=False).mask.copy()
    assert not np.array_equal(after, before)
    session.undo()
    np.testing.assert_array_equal(session.mask(), before)
    assert session.prompts() == []
    session.redo()
    np.testing.assert_array_equal(session.mask(), after)
    assert [p.kind for p in session.prompts()] == ["scribble"]


def test_a_prompt_is_removed_and_moved_as_one_interaction(session, ct, fastsam3d_seeded):
    image, liver = ct
    corner_a, corner_b, _ = liver_box(image, liver)
    session.add_box(corner_a, corner_b, prompt_id="my-box")
    moved = (corner_a + 9.0, corner_b - 9.0)
    session.move_prompt("my-box", moved)
    fresh = Session(image, fastsam3d_seeded)
    fresh.add_box(*moved)
    np.testing.assert_array_equal(session.mask(), fresh.mask())
    assert session.prompts()[0].prompt_id == "my-box"
    session.remove_prompt("my-box")
    assert not session.mask().any() and session.prompts() == []
    assert session.current_segment.crops == ()
    session.undo()  # the removal, in one step
    np.testing.assert_array_equal(session.mask(), fresh.mask())


def test_a_click_outside_a_box_opens_its_own_crop(session, ct):
    image, liver = ct
    corner_a, corner_b, box = liver_box(image, liver)
    session.add_box(corner_a, corner_b)
    crops = len(session.current_segment.crops)
    outside = image.index_to_ras(np.array([box[0].stop + 3.0, box[1].start, 15.0]))
    session.add_point(outside)
    assert len(session.current_segment.crops) == crops + 1
    assert session.current_segment.crops[-1].bound is None


def bad_drawings(image: Volume) -> list[tuple[str, object, str]]:
    ras = image.index_to_ras
    k = 15.0
    crossing = ras(np.array([[10, 10, k], [30, 30, k], [30, 10, k], [10, 30, k]], float))
    tilted = ras(np.array([[10, 10, 5], [30, 12, 15], [20, 30, 25]], float))
    far = ras(np.array([[1000.0, 1000.0, 1000.0]]))[0]
    return [
        ("box", (ras(np.array([5.0, 5.0, 5.0])), ras(np.array([5.0, 5.0, 5.0]))), "no size"),
        ("box", (far, far + 50), "outside the volume"),
        ("box", (ras(np.array([5.0, 5.0, 5.0])), "nowhere"), "box corner"),
        ("scribble", [ras(np.array([5.0, 5.0, 5.0]))], "at least two distinct points"),
        ("scribble", [far, far + 20], "outside the volume"),
        ("lasso", crossing, "crosses itself"),
        ("lasso", tilted, "not drawn on one slice"),
        ("lasso", ras(np.array([[10.3, 10.3, k], [10.6, 10.3, k], [10.4, 10.6, k]])), "no voxel"),
    ]


def test_bad_drawings_are_refused_in_one_line_and_change_nothing(session, ct):
    image, liver = ct
    session.add_point(image.index_to_ras(np.argwhere(liver)[len(np.argwhere(liver)) // 2]))
    before = session.mask().copy()
    adders = {"box": lambda c: session.add_box(*c), "scribble": session.add_scribble}
    adders["lasso"] = session.add_lasso
    for kind, drawing, words in bad_drawings(image):
        with pytest.raises(ValueError, match=words) as raised:
            adders[kind](drawing)
        assert "\n" not in str(raised.value)
        np.testing.assert_array_equal(session.mask(), before)
        assert session.prompts() == [] and len(session.clicks()) == 1
    session.undo()  # the history holds the click alone
    assert not session.mask().any()


def test_prompt_ids_are_kept_apart_from_clicks(session, ct):
    image, liver = ct
    point = image.index_to_ras(np.argwhere(liver)[len(np.argwhere(liver)) // 2])
    session.add_point(point, click_id="a")
    with pytest.raises(ValueError, match="already has a prompt 'a'"):
        session.add_box(*liver_box(image, liver)[:2], prompt_id="a")
    session.add_box(*liver_box(image, liver)[:2], prompt_id="b")
    assert [c.click_id for c in session.clicks()] == ["a"]
    derived = [c.click_id for crop in session.current_segment.crops for c in crop.clicks]
    with pytest.raises(KeyError):
        session.remove_point(next(i for i in derived if i.startswith("b")))
    with pytest.raises(KeyError, match="no longer part"):
        session.remove_prompt("a")


def test_removing_a_negative_box_replays_the_crops_opened_after_it(session, ct, fastsam3d_seeded):
    image, _ = ct
    first, second = image.index_to_ras(np.array([[55.0, 50.0, 15.0], [100.0, 50.0, 15.0]]))
    box = image.index_to_ras(np.array([[57.0, 30.0, 5.0], [70.0, 70.0, 25.0]]))
    session.add_point(first)
    session.add_box(box[0], box[1], positive=False, prompt_id="cleared")
    session.add_point(second)  # its crop's first mask prompt held the box's cleared voxels
    session.remove_prompt("cleared")
    fresh = Session(image, fastsam3d_seeded)
    fresh.add_point(first)
    fresh.add_point(second)
    np.testing.assert_array_equal(session.mask(), fresh.mask())


def test_a_box_moved_keeps_the_clicks_in_it_inside_the_new_box(session, ct):
    image, liver = ct
    middle = (np.argwhere(liver).min(axis=0) + np.argwhere(liver).max(axis=0)) // 2
    low, high = middle - [12, 10, 5], middle + [12, 10, 5]
    session.add_box(*image.index_to_ras(np.stack([low, high]).astype(float)), prompt_id="box")
    session.add_point(image.index_to_ras(middle.astype(float)), click_id="inside")
    low, high = low + 1, high + 1
    session.move_prompt("box", image.index_to_ras(np.stack([low, high]).astype(float)))
    outside = session.mask().astype(bool).copy()
    outside[tuple(slice(a, b + 1) for a, b in zip(low, high))] = False
    assert not outside.any()
    assert [c.click_id for c in session.clicks()] == ["inside"]
    # Moved out of the box, the click leaves the box's crop for one of its own.
    session.move_point("inside", image.index_to_ras(np.array([high[0] + 4.0, middle[1], 15.0])))
    assert session.current_segment.crops[-1].bound is None


class CornerRecorder:
    """The ground truth as a predictor that learned box corners, recording what it is given."""

    accepts_box_corners = True

    def __init__(self, oracle) -> None:
        self.oracle, self.prompts = oracle, []

    def encode(self, crop):
        return self.oracle.encode(crop)

    def decode(self, embedding, points, labels, mask_input):
        self.prompts.append((np.array(points), np.array(labels)))
        return self.oracle.decode(embedding, points, labels, mask_input)


def test_a_model_that_learned_box_corners_gets_the_crops_low_and_high_corner(ct):
    from fastsam3d_core.session import OraclePredictor

    image, liver = ct
    # Stored LPS-like (i and j run against R and A), as many scans are: the crop follows RAS, so
    # the volume's low corner is not the crop's.
    flipped = Volume(image.array, image.ijk_to_ras @ np.diag([-1.0, -1.0, 1.0, 1.0]))
    truth = flipped.with_array(liver.astype(np.uint8))
    recorder = CornerRecorder(OraclePredictor(truth))
    session = Session(flipped, recorder)
    corner_a, corner_b, _ = liver_box(flipped, liver)
    session.add_box(corner_a, corner_b)
    points, labels = recorder.prompts[-1]
    assert labels.tolist() == [2, 3]
    assert np.all(points[0] <= points[1])
