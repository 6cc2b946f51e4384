"""The paper's click protocol (model.md §4.1) on real labelled scans, its report and its command."""

from __future__ import annotations

import csv
import sys
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import SHARED, invoke_cli
from scipy.ndimage import binary_dilation, binary_erosion
from typer.testing import CliRunner

from fastsam3d_core import Volume, build_model
from fastsam3d_core.evaluation import (
    EvaluationReport,
    evaluate_case,
    evaluate_folder,
    find_cases,
    prepare_case,
    write_csv,
    write_plot,
)
from fastsam3d_core.evaluation.protocol import distance_to_outside
from fastsam3d_core.io import read_volume, write_labelmap
from fastsam3d_core.session import ModelPredictor, OraclePredictor

DATA = SHARED / "data"
CASES = {
    "brats": (
        DATA / "brats2021_flair_edema/imagesTr/BraTS2021_01646.nii.gz",
        DATA / "brats2021_flair_edema/labelsTr/BraTS2021_01646.nii.gz",
    ),
    "aorta": (DATA / "totalseg_ct/aorta_ct.nii.gz", DATA / "totalseg_ct/aorta_label.nii.gz"),
    "ct3mm": (
        DATA / "totalseg_ct/example_ct_3mm.nii.gz",
        DATA / "totalseg_ct/example_seg_3mm.nii.gz",
    ),
}
pytestmark = pytest.mark.skipif(
    not all(path.is_file() for pair in CASES.values() for path in pair),
    reason=f"real test scans not found in {DATA}",
)
runner = CliRunner()


@pytest.fixture(scope="module")
def volumes() -> dict[str, tuple[Volume, Volume]]:
    return {name: (read_volume(i), read_volume(lab)) for name, (i, lab) in CASES.items()}


class ErodedPlusCubePredictor(OraclePredictor):
    """An imperfect model: the ground truth eroded by two voxels plus a false 16³ cube in a corner
    of the crop, whatever the prompts. Records what every decode call received."""

    CUBE = (slice(2, 18),) * 3

    def __init__(self, labels: Volume) -> None:
        super().__init__(labels)
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.outputs: list[np.ndarray] = []

    def encode(self, crop):
        truth = super().encode(crop)
        if truth[self.CUBE].any():
            raise RuntimeError("the false cube overlaps the ground truth")
        predicted = binary_erosion(truth, iterations=2)
        predicted[self.CUBE] = True
        return predicted

    def decode(self, embedding, points, labels, mask_input):
        self.calls.append((points.copy(), labels.copy(), np.array(mask_input)))
        self.outputs.append(super().decode(embedding, points, labels, mask_input))
        return self.outputs[-1]


def distances_to_outside(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Brute force: Euclidean distance from each point (P, 3) to the nearest voxel outside the
    mask, voxels beyond the array counting as outside. Only outside voxels touching the mask can
    be nearest, so only those are searched."""
    padded = np.pad(mask, 1)
    candidates = np.argwhere(~padded & binary_dilation(padded)) - 1
    nearest = [
        ((chunk[:, None, :] - candidates[None]) ** 2).sum(-1).min(axis=1)
        for chunk in np.array_split(points, max(1, len(points) // 400))
    ]
    return np.sqrt(np.concatenate(nearest))


@pytest.mark.parametrize("name", ["brats", "aorta"])
def test_oracle_is_perfect_after_one_click(volumes, name):
    image, label = volumes[name]
    result = evaluate_case(image, label, OraclePredictor(label), clicks=3, name=name)
    assert result.ok, result.reason
    assert result.dice[0] >= 0.99 and result.iou[0] >= 0.99
    assert result.converged_after == 1 and result.dice == (result.dice[0],) * 3
    assert result.points_crop.shape == (1, 3) and result.point_labels.tolist() == [1]


@pytest.mark.parametrize("name", ["brats", "aorta"])
def test_crop_is_torchio_canonical_crop_or_pad_and_znormalisation(volumes, name):
    """Independent reference: nibabel's canonical reorientation, torchio's CropOrPad arithmetic
    (window start floor((first + last + 1) / 2) - 64, zero padding) and ZNormalization(x > 0)."""
    image_path, label_path = CASES[name]
    canonical_label = nib.as_closest_canonical(nib.load(label_path))
    truth = np.asarray(canonical_label.dataobj) != 0
    nonzero = np.argwhere(truth)
    begin = np.floor((nonzero.min(0) + nonzero.max(0) + 1) / 2).astype(int) - 64
    expected_affine = canonical_label.affine.copy()
    expected_affine[:3, 3] += expected_affine[:3, :3] @ begin
    canonical_image = np.asarray(nib.as_closest_canonical(nib.load(image_path)).dataobj)

    def window(array):
        out = np.zeros((128, 128, 128), dtype=np.float64)
        source = tuple(slice(max(b, 0), min(b + 128, n)) for b, n in zip(begin, array.shape))
        target = tuple(slice(s.start - b, s.stop - b) for s, b in zip(source, begin))
        out[target] = array[source]
        return out

    image_window = window(canonical_image)
    foreground = image_window[image_window > 0]
    expected_image = (image_window - foreground.mean()) / foreground.std(ddof=1)

    crop, crop_truth = prepare_case(*volumes[name])
    np.testing.assert_allclose(crop.affine, expected_affine, atol=1e-4)
    np.testing.assert_array_equal(crop_truth, window(truth) > 0)
    np.testing.assert_allclose(crop.image, expected_image, atol=1e-3)


def test_clicks_go_to_errors_with_correct_labels_and_the_first_goes_deep(volumes):
    image, label = volumes["brats"]
    predictor = ErodedPlusCubePredictor(label)
    result = evaluate_case(image, label, predictor, clicks=8, seed=3)
    _, truth = prepare_case(image, label)
    predicted = predictor.outputs[0] > 0
    assert len(predictor.calls) == 8
    for index, (points, labels, _) in enumerate(predictor.calls):
        assert points.shape == (1, 3) and points.dtype == np.float32 and labels.dtype == np.int64
        before = np.zeros_like(truth) if index == 0 else predicted
        voxel = tuple(points[0].astype(int))
        assert truth[voxel] != before[voxel], f"click {index} is not on an error voxel"
        assert labels[0] == int(truth[voxel] and not before[voxel])
    # Click 1 (no prediction yet): deep inside the ground truth, by brute-force distances.
    first = predictor.calls[0][0].astype(int)
    assert truth[tuple(first[0])]
    deepest = distances_to_outside(truth, np.argwhere(truth)).max()
    assert distances_to_outside(truth, first)[0] > deepest / 2
    # Click 2: the false cube (voxels 2..17, maximum distance 8) beats the two-voxel shell of
    # false negatives, so the click is in the cube's core 6..13 (distance > 4) and negative.
    second, second_label = predictor.calls[1][0][0], predictor.calls[1][1][0]
    assert np.all((second >= 6) & (second <= 13)) and second_label == 0
    assert {int(labels[0]) for _, labels, _ in predictor.calls[2:]} == {0, 1}
    intersection = np.count_nonzero(predicted & truth)
    dice = 2 * intersection / (predicted.sum() + truth.sum())
    np.testing.assert_allclose(result.dice, [dice] * 8, rtol=1e-12)
    assert result.converged_after is None


def test_distance_counts_the_crop_border_as_outside(volumes):
    """The aorta is longer than the crop, so its truth touches the crop's faces, where the
    paper's zero padding (edt black_border) makes the border count as outside."""
    _, truth = prepare_case(*volumes["aorta"])
    corner = truth[:, :, :12]
    assert corner[:, :, 0].any()
    voxels = np.argwhere(corner)
    np.testing.assert_allclose(
        distance_to_outside(corner)[tuple(voxels.T)], distances_to_outside(corner, voxels)
    )
    assert distance_to_outside(corner)[~corner].max() == 0


def test_accumulate_sends_every_click_so_far_with_the_previous_logits(volumes):
    image, label = volumes["brats"]
    predictor = ErodedPlusCubePredictor(label)
    result = evaluate_case(image, label, predictor, clicks=4, accumulate=True, seed=1)
    assert [len(points) for points, _, _ in predictor.calls] == [1, 2, 3, 4]
    masks = [mask for _, _, mask in predictor.calls]
    assert masks[0].shape == (32, 32, 32) and not masks[0].any()  # zeros, not "no mask"
    assert all(np.array_equal(m, previous) for m, previous in zip(masks[1:], predictor.outputs))
    last_points, last_labels, _ = predictor.calls[-1]
    np.testing.assert_array_equal(last_points, result.points_crop)
    np.testing.assert_array_equal(last_labels, result.point_labels)
    for (earlier, _, _), (later, _, _) in zip(predictor.calls, predictor.calls[1:]):
        np.testing.assert_array_equal(later[:-1], earlier)


def test_same_seed_same_clicks(volumes):
    image, label = volumes["brats"]
    runs = [
        evaluate_case(image, label, ErodedPlusCubePredictor(label), clicks=4, seed=seed)
        for seed in (7, 7, 8)
    ]
    np.testing.assert_array_equal(runs[0].points_crop, runs[1].points_crop)
    assert runs[0].dice == runs[1].dice
    assert not np.array_equal(runs[0].points_crop, runs[2].points_crop)


def test_label_value_selects_one_structure(volumes):
    image, label = volumes["ct3mm"]
    liver = evaluate_case(image, label, OraclePredictor(label, 5), clicks=1, label_value=5)
    union = evaluate_case(image, label, OraclePredictor(label), clicks=1)
    assert liver.ok and union.ok and liver.dice[0] >= 0.98 and union.dice[0] >= 0.98
    centre_ras = liver.crop_to_ras[:3, :3] @ np.full(3, 63.5) + liver.crop_to_ras[:3, 3]
    voxels = np.argwhere(label.array == 5)
    lo, hi = label.index_to_ras(voxels.min(0)), label.index_to_ras(voxels.max(0))
    assert np.all(centre_ras >= np.minimum(lo, hi)) and np.all(centre_ras <= np.maximum(lo, hi))
    assert not np.allclose(liver.crop_to_ras, union.crop_to_ras)


def test_empty_and_absent_labels_are_skipped(volumes):
    image, label = volumes["brats"]
    empty = label.with_array(np.zeros(label.shape, dtype=np.uint8))
    result = evaluate_case(image, empty, OraclePredictor(empty), name="empty")
    assert result.status == "skipped" and "empty" in result.reason and result.dice == ()
    result = evaluate_case(image, label, OraclePredictor(label), label_value=2)
    assert result.status == "skipped" and "value-2" in result.reason


def test_label_on_another_grid_is_resampled_by_ras(volumes):
    image, label = volumes["brats"]
    reference = evaluate_case(image, label, OraclePredictor(label), clicks=1)
    # The same label stored in (j, i, k) order with the matching affine.
    permuted = Volume(label.array.transpose(1, 0, 2), label.ijk_to_ras[:, [1, 0, 2, 3]])
    result = evaluate_case(image, permuted, OraclePredictor(permuted), clicks=1)
    assert result.ok and result.dice[0] >= 0.99
    np.testing.assert_allclose(result.crop_to_ras, reference.crop_to_ras, atol=1e-9)
    far = Volume(label.array, label.ijk_to_ras + np.pad(np.full((3, 1), 1000.0), ((0, 1), (3, 0))))
    with pytest.warns(UserWarning, match="does not overlap"):
        result = evaluate_case(image, far, OraclePredictor(far), name="far")
    assert result.status == "skipped" and "does not overlap" in result.reason


@pytest.fixture()
def dataset(tmp_path, volumes):
    """imagesTr/labelsTr with BraTS, the aorta CT, and a case whose label is empty."""
    images, labels = tmp_path / "ds" / "imagesTr", tmp_path / "ds" / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    for name in ("brats", "aorta"):
        (images / f"{name}.nii.gz").symlink_to(CASES[name][0])
        (labels / f"{name}.nii.gz").symlink_to(CASES[name][1])
    (images / "empty.nii.gz").symlink_to(CASES["brats"][0])
    write_labelmap(
        labels / "empty.nii.gz", np.zeros(volumes["brats"][0].shape, np.uint8), volumes["brats"][0]
    )
    return tmp_path / "ds"


def test_folder_report_csv_and_plot(dataset, tmp_path):
    matplotlib_image = pytest.importorskip("matplotlib.image")
    seen = []
    report = evaluate_folder(
        dataset,
        None,
        lambda label: OraclePredictor(label),
        clicks=3,
        progress=lambda done, total, result: seen.append((done, total, result.case)),
    )
    assert seen == [(1, 3, "aorta"), (2, 3, "brats"), (3, 3, "empty")]
    assert report.summary_clicks == (1, 3) and report.mean_dice()[1] >= 0.99
    with pytest.raises(FileNotFoundError, match="create the folder first|does not exist"):
        write_csv(report, tmp_path / "out" / "dice.csv")  # as `segment`: no folder is made
    (tmp_path / "out").mkdir()
    write_csv(report, tmp_path / "out" / "dice.csv")
    assert write_plot(report, tmp_path / "out" / "dice.png")
    with (tmp_path / "out" / "dice.csv").open(newline="") as stream:
        rows = {row["case"]: row for row in csv.DictReader(stream)}
    assert set(rows) == {"aorta", "brats", "empty"}
    for name in ("aorta", "brats"):
        assert rows[name]["status"] == "ok" and float(rows[name]["dice_1"]) >= 0.99
        assert float(rows[name]["dice@3"]) == float(rows[name]["dice_3"])
        assert float(rows[name]["iou@1"]) >= 0.99 and rows[name]["converged_after"] == "1"
    assert rows["empty"]["status"] == "skipped" and "empty" in rows["empty"]["reason"]
    assert rows["empty"]["dice_1"] == ""
    picture = matplotlib_image.imread(tmp_path / "out" / "dice.png")
    assert picture.shape == (440, 640, 4)


def test_plot_without_matplotlib_warns(monkeypatch, tmp_path):
    for module in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report = EvaluationReport((), clicks=1)
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        assert not write_plot(report, tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()


def test_find_cases_layouts(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    with pytest.raises(ValueError, match="no image"):
        find_cases(tmp_path / "imagesTr")
    with pytest.raises(ValueError, match="not found"):
        find_cases(tmp_path / "missing")
    (tmp_path / "imagesTr" / "case_7_0000.nii.gz").write_bytes(b"")
    (tmp_path / "imagesTr" / "lonely.nrrd").write_bytes(b"")
    (tmp_path / "labelsTr" / "case_7.nii.gz").write_bytes(b"")
    with pytest.warns(UserWarning, match="lonely.nrrd"):
        pairs = find_cases(tmp_path)
    assert [(p.name, p.label.name) for p in pairs] == [("case_7", "case_7.nii.gz")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explicit = find_cases(tmp_path / "imagesTr", tmp_path / "labelsTr")
    assert explicit == pairs


def test_cli_with_the_oracle(dataset, tmp_path):
    output = tmp_path / "result.csv"
    arguments = ["evaluate", str(dataset / "imagesTr"), "--model", "oracle", "--clicks", "2"]
    result = invoke_cli(arguments + ["-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "[2/3] brats: Dice 1: 1.0000" in result.output
    assert "[3/3] empty: skipped" in result.output
    assert "2 case(s) evaluated, 1 skipped" in result.output
    with output.open(newline="") as stream:
        assert len(list(csv.DictReader(stream))) == 3


def test_cli_bad_arguments(dataset, tmp_path):
    (tmp_path / "imagesTs").mkdir()
    (tmp_path / "labelsTs").mkdir()
    # Status 2 for a usage error, 1 for input that cannot be used; always one line.
    for arguments, message, status in (
        ([str(tmp_path / "missing")], "not found", 1),
        ([str(tmp_path / "imagesTs")], "no image", 1),
        ([str(dataset), "--labels", str(tmp_path / "nope")], "not found", 1),
        ([str(dataset), "--clicks", "0"], "clicks", 2),
        ([str(dataset), "--model", "unknown"], "oracle", 2),
    ):
        result = invoke_cli(["evaluate", *arguments, "-o", str(tmp_path / "x.csv")])
        assert result.exit_code == status, (arguments, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.output
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.slow
def test_a_real_model_through_the_protocol_and_the_cli(dataset, tmp_path):
    """FastSAM3D with random weights: 32³ logits, the zero mask prompt and ``--weights``."""
    torch.manual_seed(0)
    model = build_model("fastsam3d").allow_random_weights()
    image, label = read_volume(CASES["brats"][0]), read_volume(CASES["brats"][1])
    for accumulate in (False, True):
        result = evaluate_case(image, label, ModelPredictor(model), clicks=2, accumulate=accumulate)
        assert result.ok and len(result.dice) == 2
        assert all(0 <= value <= 1 for value in result.dice + result.iou)
    weights = tmp_path / "random.pth"
    torch.save({"model_state_dict": model.state_dict()}, weights)
    arguments = ["evaluate", str(dataset), "--weights", str(weights), "--clicks", "2"]
    result = invoke_cli(arguments + ["--device", "cpu", "-o", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    assert "loading fastsam3d" in result.output and "2 case(s) evaluated" in result.output
