"""``fastsam3d evaluate --first-prompt text`` (issue 29): the label's name in ``dataset.json`` as
a text prompt over the whole image, then the paper's clicks; on the real multi-label CT, with the
text oracle and with the seeded FastSAM3D and a text adapter; one line for what is missing."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import GOLDEN_DIR, SHARED_DATA_DIR, invoke_cli

CT = SHARED_DATA_DIR / "totalseg_ct"
pytestmark = pytest.mark.skipif(
    not (CT.is_dir() and GOLDEN_DIR.is_dir()), reason="shared test data not available"
)
LIVER = 5


@pytest.fixture()
def dataset(tmp_path):
    """The CT as an nnU-Net dataset whose dataset.json names its labels (MSD style)."""
    images, labels = tmp_path / "ds" / "imagesTr", tmp_path / "ds" / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    (images / "ct_0000.nii.gz").symlink_to(CT / "example_ct_3mm.nii.gz")
    (labels / "ct.nii.gz").symlink_to(CT / "example_seg_3mm.nii.gz")
    names = {"0": "background", "1": "spleen", "2": "kidney_right", "5": "liver"}
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"labels": names}))
    return tmp_path / "ds"


def rows(path):
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_oracle_segments_the_labels_name_then_clicks(dataset, tmp_path):
    output = tmp_path / "text.csv"
    result = invoke_cli(["evaluate", dataset, "--model", "oracle", "--label", LIVER,
                         "--clicks", "3", "--first-prompt", "text", "-o", output])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "the label's name (text) first" in result.output
    assert "click 1 is the text prompt" in result.output
    (row,) = rows(output)
    assert row["status"] == "ok" and row["first_prompt"] == "text"
    assert float(row["dice_1"]) > 0.95  # the oracle's liver, composed from the whole image's crops


def test_the_seeded_model_with_a_text_adapter_runs_text_then_clicks(
    dataset, seeded_checkpoint, tmp_path
):
    from text_adapters import save_text_adapter

    adapter = save_text_adapter(tmp_path / "text.pt")
    output = tmp_path / "text.csv"
    result = invoke_cli(["evaluate", dataset, "--weights", seeded_checkpoint, "--adapter",
                         adapter, "--device", "cpu", "--label", LIVER, "--clicks", "3",
                         "--first-prompt", "text", "-o", output])  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = rows(output)
    assert row["status"] == "ok" and row["first_prompt"] == "text"
    assert all(0.0 <= float(row[f"dice@{k}"]) <= 1.0 for k in (1, 2, 3))


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--model", "oracle"], "--first-prompt text needs --label VALUE"),
        (["--model", "oracle", "--label", "7"], "takes label 7's name from"),
        (["--label", "5"], "segmenting by name needs a model with a text path"),
        (["--label", "2", "--adapter", "TEXT"], "'kidney_right' is not in this adapter's vocab"),
    ],
)
def test_what_a_text_first_prompt_lacks_is_one_line_before_any_case(
    dataset, tmp_path, options, says
):
    from text_adapters import save_text_adapter

    if "TEXT" in options:
        options = [save_text_adapter(tmp_path / "text.pt") if o == "TEXT" else o for o in options]
    output = tmp_path / "x.csv"
    result = invoke_cli(["evaluate", dataset, "--first-prompt", "text", "--weights",
                         tmp_path / "no.pth", *options, "-o", output])  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.exit_code in (1, 2) and len(lines) == 1, result.output
    assert says in " ".join(lines[0].split()), lines[0]
    assert "no.pth" not in lines[0] and not output.exists()


def test_clicks_after_a_text_refine_its_segment_and_the_dice_rises():
    """The text's mask is the clicks' start: a text the (oracle) model reads as the wrong organ
    (the spleen for "liver"), then the paper's clicks on the liver's errors, which the session
    adds to the text's segment: Dice starts near 0 and rises."""
    from fastsam3d_core.evaluation.prompted import evaluate_prompted_case
    from fastsam3d_core.io import read_volume
    from fastsam3d_core.session.text_oracle import OracleTextPredictor

    image = read_volume(CT / "example_ct_3mm.nii.gz")
    labels = read_volume(CT / "example_seg_3mm.nii.gz")
    mistaken = OracleTextPredictor(labels, {"liver": 1})
    result = evaluate_prompted_case(image, labels, mistaken, first_prompt="text", text="liver",
                                    label_value=LIVER, clicks=3, name="ct")  # fmt: skip
    assert result.ok and result.first_prompt == "text"
    assert result.dice[0] < 0.05 and result.dice[-1] > 0.5 > result.dice[0]
