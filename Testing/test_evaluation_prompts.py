"""``evaluate --first-prompt``: boxes, scribbles and lassos simulated from the ground truth of real
scans, checked by the session's own checks, and the protocol run with each of them."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import SHARED, invoke_cli
from scipy import ndimage

from fastsam3d_core import Volume, build_model
from fastsam3d_core.evaluation import (
    evaluate_case,
    evaluate_cases,
    evaluate_prompted_case,
    find_cases,
    simulated_prompt,
)
from fastsam3d_core.evaluation.centreline import segment_inside
from fastsam3d_core.evaluation.first_prompts import (
    BOX_JITTER_MM,
    bounding_box,
    simulated_box,
    simulated_lasso,
    simulated_scribble,
    slice_axis,
)
from fastsam3d_core.evaluation.outline import largest_component, outer_outline
from fastsam3d_core.evaluation.prompted import add_drawing
from fastsam3d_core.evaluation.protocol import in_crop, oracle_truth
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import ModelPredictor, OraclePredictor, Session
from fastsam3d_core.session.shapes import (
    LASSO_MAX_POINTS,
    box_voxels,
    lasso_fill,
    scribble_samples,
)

DATA = SHARED / "data"
BRATS = (
    DATA / "brats2021_flair_edema/imagesTr/BraTS2021_01646.nii.gz",
    DATA / "brats2021_flair_edema/labelsTr/BraTS2021_01646.nii.gz",
)
CT = (DATA / "totalseg_ct/example_ct_3mm.nii.gz", DATA / "totalseg_ct/example_seg_3mm.nii.gz")
# (scan, label value): the liver and the spleen of the 3 mm CT, the oedema of the BraTS FLAIR.
OBJECTS = {"liver": (CT, 5), "spleen": (CT, 1), "oedema": (BRATS, 1)}
pytestmark = pytest.mark.skipif(
    not all(path.is_file() for path in BRATS + CT), reason=f"real test scans not found in {DATA}"
)


@pytest.fixture(scope="module")
def scans() -> dict[str, tuple[Volume, Volume]]:
    return {
        name: (read_volume(image), read_volume(label))
        for name, (image, label) in (("ct", CT), ("brats", BRATS))
    }


def scan_of(scans, name: str) -> tuple[Volume, Volume, np.ndarray]:
    """The image, the label volume and the object's bool truth on the image's grid."""
    paths, value = OBJECTS[name]
    image, label = scans["ct" if paths == CT else "brats"]
    return image, label, label.array == value


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_box_is_the_truths_bounding_box_within_the_jitter(scans, name):
    image, _, truth = scan_of(scans, name)
    lo, hi = bounding_box(truth)
    exact = simulated_box(image, truth, np.random.default_rng(0), jitter_mm=0.0)
    np.testing.assert_array_equal(box_voxels(image, *exact), (lo, hi))
    reach = np.floor(BOX_JITTER_MM / image.spacing).astype(int)
    moves = []
    for seed in range(12):
        corners = simulated_prompt("box", image, truth, np.random.default_rng(seed))
        box_lo, box_hi = box_voxels(image, *corners)  # the session's own check and voxels
        moves.append(np.concatenate([lo - box_lo, box_hi - hi]))  # outward positive
        shape = np.array(image.shape)
        limit_lo, limit_hi = np.minimum(lo, reach), np.minimum(shape - hi, reach)
        assert np.all(lo - box_lo <= limit_lo) and np.all(box_hi - hi <= limit_hi)
        assert np.all(box_lo - lo <= reach) and np.all(hi - box_hi <= reach)
        inside = truth[tuple(slice(a, b) for a, b in zip(box_lo, box_hi))].sum()
        assert inside / truth.sum() > 0.8  # a few voxels off each face of a large object
    moves = np.array(moves)
    assert (moves > 0).any() and (moves < 0).any(), "the jitter moves faces both ways"
    assert len({tuple(m) for m in moves}) > 6, "the jitter depends on the seed"


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_scribble_runs_inside_the_truth_along_its_length(scans, name):
    image, _, truth = scan_of(scans, name)
    stroke = simulated_prompt("scribble", image, truth, np.random.default_rng(0))
    samples = scribble_samples(image, stroke)  # the session's check and its points
    for points in (stroke, samples):
        voxels = np.round(image.ras_to_index(points)).astype(int)
        assert truth[tuple(voxels.T)].all()
    # From the first to the last slice of the object along its longest axis.
    part = largest_component(truth)
    lo, hi = bounding_box(part)
    axis = int(np.argmax((hi - lo) * image.spacing))
    ends = np.round(image.ras_to_index(stroke[[0, -1]])).astype(int)
    assert ends[0][axis] == lo[axis] and ends[1][axis] == hi[axis] - 1
    # Through the core: deeper on average than the object's voxels are (a stroke along the
    # surface would be as shallow as voxels get; the oedema is a thin shell, the organs are not).
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    depth = np.zeros(truth.shape)
    depth[box] = ndimage.distance_transform_edt(np.pad(part[box], 1), sampling=image.spacing)[
        1:-1, 1:-1, 1:-1
    ]
    sampled = np.round(image.ras_to_index(samples)).astype(int)
    assert depth[tuple(sampled.T)].mean() > (1.1 if name == "oedema" else 1.5) * depth[part].mean()


def test_scribble_of_a_curved_object_bends_with_it():
    """A U-shaped tube: a straight stroke between its two ends would cross the gap."""
    shape = (40, 40, 12)
    grid = np.mgrid[: shape[0], : shape[1]]
    radius = np.hypot(grid[0] - 20, grid[1] - 4)
    ring = (radius > 10) & (radius < 16) & (grid[1] >= 4)
    tube = np.zeros(shape, bool)
    tube[:, :, 3:9] = ring[:, :, None]
    volume = Volume(np.zeros(shape, np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    stroke = simulated_scribble(volume, tube)
    voxels = np.round(stroke).astype(int)
    assert len(stroke) > 3
    assert all(segment_inside(tube, a, b) for a, b in zip(voxels, voxels[1:]))
    assert not segment_inside(tube, voxels[0], voxels[-1])
    samples = np.round(volume.ras_to_index(scribble_samples(volume, stroke))).astype(int)
    assert tube[tuple(samples.T)].all()


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_lasso_fills_the_truths_largest_slice(scans, name):
    image, _, truth = scan_of(scans, name)
    contour = simulated_lasso(image, truth)
    fill = lasso_fill(image, contour)  # the session's checks: one slice, not crossing itself
    axis = slice_axis(image)
    assert axis == 2 and fill.axis == axis  # isotropic scans: slices along k
    index = int(fill.lo[axis])
    assert index == int(np.argmax(truth.sum(axis=(0, 1))))
    filled = np.zeros(truth.shape[:2], bool)
    filled[fill.lo[0] : fill.hi[0], fill.lo[1] : fill.hi[1]] = fill.inside[:, :, 0]
    component = largest_component(truth[:, :, index])
    assert dice(filled, component) > 0.9
    # Exactly the part with its holes filled.
    np.testing.assert_array_equal(filled, ndimage.binary_fill_holes(component))


def test_a_long_outline_is_simplified_to_what_a_session_takes():
    """A large rough slice on a fine grid has more corners than a lasso may have points."""
    rng = np.random.default_rng(0)
    grid = np.mgrid[:360, :360] - 180.0
    radius = 150 + 30 * np.sin(7 * np.arctan2(grid[1], grid[0])) + rng.normal(0, 4, (360, 360))
    rough = np.hypot(*grid) < radius
    assert len(outer_outline(rough)) > LASSO_MAX_POINTS
    truth = np.zeros((360, 360, 3), bool)
    truth[:, :, 1] = rough
    volume = Volume(np.zeros(truth.shape, np.float32), np.diag([0.7, 0.7, 0.7, 1.0]))
    contour = simulated_lasso(volume, truth)
    assert len(contour) <= LASSO_MAX_POINTS
    fill = lasso_fill(volume, contour)  # the session's checks
    filled = np.zeros(rough.shape, bool)
    filled[fill.lo[0] : fill.hi[0], fill.lo[1] : fill.hi[1]] = fill.inside[:, :, 0]
    assert fill.lo[2] == 1 and dice(filled, ndimage.binary_fill_holes(rough)) > 0.99


def test_outline_is_a_simple_polygon_that_fills_back_its_region():
    """Random regions with holes, several parts and pixels touching only at a corner: the fill
    by an independent point-in-polygon (matplotlib) is the largest part with its holes filled,
    and no vertex of the polygon touches an edge other than its own two."""
    path_module = pytest.importorskip("matplotlib.path")
    rng = np.random.default_rng(5)
    pocket = np.array([[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 1, 1]], bool)  # (1, 2): corner-open
    regions = [pocket] + [
        rng.random(rng.integers(3, 16, 2)) < rng.uniform(0.35, 0.8) for _ in range(60)
    ]
    for region in regions:
        if not region.any():
            continue
        polygon = outer_outline(region)
        centres = np.argwhere(np.ones(region.shape, bool))
        inside = path_module.Path(polygon).contains_points(centres).reshape(region.shape)
        expected = ndimage.binary_fill_holes(largest_component(region))
        np.testing.assert_array_equal(inside, expected)
        assert smallest_gap(polygon) >= 1.0  # on the lattice: a touch would be 0
    assert outer_outline(pocket).shape == (6, 2)  # the pocket filled: an L-shaped hexagon


def test_a_bad_first_prompt_is_refused_before_any_case(scans):
    with pytest.raises(ValueError, match="unknown first prompt 'circle': choose from point, box"):
        evaluate_cases([], lambda label: OraclePredictor(label), first_prompt="circle")


def test_point_is_the_papers_protocol_unchanged(scans):
    image, label = scans["brats"]
    before = evaluate_case(image, label, OraclePredictor(label), clicks=2, seed=4)
    after = evaluate_prompted_case(image, label, OraclePredictor(label), clicks=2, seed=4)
    assert after.dice == before.dice and after.first_prompt == "point"
    np.testing.assert_array_equal(after.points_crop, before.points_crop)


@pytest.mark.parametrize("kind", ["box", "scribble", "lasso"])
def test_a_drawing_then_the_papers_clicks_with_the_oracle(scans, kind):
    image, label, _ = scan_of(scans, "spleen")
    result = evaluate_prompted_case(
        image, label, OraclePredictor(label, 1), first_prompt=kind, clicks=3, label_value=1
    )
    assert result.ok and result.first_prompt == kind and len(result.dice) == 3
    assert result.dice[0] > 0.95 and result.dice[-1] > 0.99  # a perfect model, a drawing or two
    assert result.points_crop.shape == (len(result.point_labels), 3)


def test_a_box_then_the_papers_clicks_with_a_seeded_model(scans):
    image, label = scans["brats"]
    kind = "box"
    torch.manual_seed(0)
    model = build_model("fastsam3d").allow_random_weights()
    result = evaluate_prompted_case(
        image, label, ModelPredictor(model), first_prompt=kind, clicks=2, seed=1
    )
    assert result.ok and result.first_prompt == kind and len(result.dice) == 2
    assert all(0 <= value <= 1 for value in result.dice + result.iou)
    assert result.points_crop.shape == (len(result.point_labels), 3)
    # Click 1 is what a session makes of the same drawing, measured in the oracle crop.
    session = Session(image, ModelPredictor(model))
    truth_on_image, grid, truth = oracle_truth(image, label)
    add_drawing(
        session, kind, simulated_prompt(kind, image, truth_on_image, np.random.default_rng(1))
    )
    assert result.dice[0] == dice(in_crop(session.mask() > 0, image, grid), truth)


def test_a_drawing_the_session_refuses_skips_the_case(scans):
    image, label = scans["brats"]
    one = np.zeros(label.shape, np.uint8)
    one[80, 60, 50] = 1
    single = label.with_array(one)
    result = evaluate_prompted_case(image, single, OraclePredictor(single), first_prompt="scribble")
    assert result.status == "skipped" and result.first_prompt == "scribble"
    assert "refused the simulated scribble" in result.reason and "two distinct" in result.reason


@pytest.fixture()
def dataset(tmp_path):
    images, labels = tmp_path / "ds" / "imagesTr", tmp_path / "ds" / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    (images / "brats.nii.gz").symlink_to(BRATS[0])
    (labels / "brats.nii.gz").symlink_to(BRATS[1])
    return tmp_path / "ds"


def test_cli_box_first_writes_its_report(dataset, tmp_path):
    output = tmp_path / "box.csv"
    arguments = ["evaluate", dataset, "--model", "oracle", "--clicks", "2"]
    result = invoke_cli(arguments + ["--first-prompt", "box", "-o", output])
    assert result.exit_code == 0, result.output
    assert "a simulated box first" in result.output
    assert "click 1 is the simulated box" in result.output
    with output.open(newline="") as stream:
        (row,) = list(csv.DictReader(stream))
    assert row["status"] == "ok" and row["first_prompt"] == "box"
    assert 0.9 < float(row["dice_1"]) <= float(row["dice_2"]) <= 1.0


def test_cli_refuses_an_unknown_first_prompt_in_one_line(dataset, tmp_path):
    output = tmp_path / "x.csv"
    result = invoke_cli(["evaluate", dataset, "--first-prompt", "circle", "-o", output])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "--first-prompt" in result.stderr
    assert "'circle': choose from point, box, scribble, lasso" in result.stderr
    assert not output.exists()


def test_report_names_the_first_prompt_of_the_papers_clicks(dataset):
    report = evaluate_cases(find_cases(dataset), lambda label: OraclePredictor(label), clicks=1)
    assert report.first_prompt == "point" and report.results[0].first_prompt == "point"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def smallest_gap(polygon: np.ndarray) -> float:
    """The smallest distance from a vertex to an edge it is not an end of. Where no two edges
    cross (the lasso check), two edges that touch are this close, and otherwise they are
    farther apart than it at one of their ends."""
    start, end = polygon, np.roll(polygon, -1, axis=0)
    count = len(polygon)
    vertex, edge = np.meshgrid(np.arange(count), np.arange(count), indexing="ij")
    away = (vertex != edge) & (vertex != (edge + 1) % count)
    p, a, b = polygon[vertex[away]], start[edge[away]], end[edge[away]]
    along = np.clip(((p - a) * (b - a)).sum(1) / ((b - a) ** 2).sum(1), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + along[:, None] * (b - a)), axis=1).min())
