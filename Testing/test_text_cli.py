"""``fastsam3d segment --text`` (issue 29) on the real 3 mm CT with the seeded FastSAM3D and an
adapter file with a text path: one segment per text, named by it; the other prompts refine the
last one; and one line, before the model loads, for each input that cannot be segmented by text."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GOLDEN_DIR, SHARED_DATA_DIR, invoke_cli, save_random_adapter, seeded_model
from text_adapters import save_text_adapter

from fastsam3d_core.io import read_segmentation, read_volume

CT = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_3mm.nii.gz"

pytestmark = pytest.mark.skipif(
    not (CT.is_file() and GOLDEN_DIR.is_dir()), reason="shared test data not available"
)


@pytest.fixture(scope="module")
def text_adapter(tmp_path_factory):
    return save_text_adapter(tmp_path_factory.mktemp("adapter") / "text.pt")


def segment(*arguments):
    return invoke_cli(["segment", CT, "--device", "cpu", *arguments])


def test_each_text_writes_a_segment_named_by_it(seeded_checkpoint, text_adapter, tmp_path):
    output, labelmap = tmp_path / "organs.seg.nrrd", tmp_path / "organs.nii.gz"
    result = segment("--text", "liver", "--text", "Spleen", "--weights", seeded_checkpoint,
                     "--adapter", text_adapter, "-o", output, "-o", labelmap)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line.split(":")[0] for line in result.stdout.splitlines() if "/2 " in line]
    assert lines == ["text 1/2 + 'liver'", "text 2/2 + 'Spleen'"]
    segments, _ = read_segmentation(output)
    assert [s.name for s in segments] == ["liver", "Spleen"]
    assert segments[0].mask.any()
    # The segments never overlap (the later keeps the earlier's voxels out), so the labelmap
    # holds both.
    labels = read_volume(labelmap).array
    for value, s in enumerate(segments, 1):
        np.testing.assert_array_equal(labels == value, s.mask.astype(bool))


def test_a_point_after_the_text_refines_its_segment(seeded_checkpoint, text_adapter, tmp_path):
    ct = read_volume(CT)
    point = ",".join(f"{v:.4f}" for v in ct.index_to_ras(np.array([60.0, 50.0, 15.0])))
    alone, refined = tmp_path / "alone.seg.nrrd", tmp_path / "refined.seg.nrrd"
    common = ["--weights", seeded_checkpoint, "--adapter", text_adapter, "--text", "liver"]
    assert segment(*common, "-o", alone).exit_code == 0
    result = segment(*common, "--point", point + ":neg", "-o", refined)
    assert result.exit_code == 0, result.output
    assert "point 2/2 -" in result.stdout and "decoder," in result.stdout
    (first,), _ = read_segmentation(alone)
    (second,), _ = read_segmentation(refined)
    assert second.name == "liver" and not np.array_equal(first.mask, second.mask)


def without_text_path(tmp_path):
    path = tmp_path / "clicks.pt"
    save_random_adapter(seeded_model("fastsam3d"), path)
    return path


BAD_INPUTS = {
    "empty text": (["--text", "  "], "text", "empty text: give the name of a structure"),
    "unknown text": (
        ["--text", "kidney"],
        "text",
        "--text 'kidney': 'kidney' is not in this adapter's vocabulary (liver, spleen); other "
        "text needs the text model it was trained with: --text-model seeded",
    ),
    "adapter without a text path": (
        ["--text", "liver"],
        without_text_path,
        "an adapter without a text path (trained without --text)",
    ),
    "no adapter": (["--text", "liver"], None, "segmenting by name needs a model with a text path"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_text_that_cannot_be_segmented_gets_one_line_before_the_model_loads(
    case, text_adapter, tmp_path
):
    options, adapter, says = BAD_INPUTS[case]
    if adapter == "text":
        options = [*options, "--adapter", text_adapter]
    elif adapter is not None:
        options = [*options, "--adapter", adapter(tmp_path)]
    output = tmp_path / "out.seg.nrrd"
    # Weights that do not exist: the text is refused before anything opens them.
    result = segment(*options, "--weights", tmp_path / "no.pth", "-o", output)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code in (1, 2) and len(lines) == 1, result.output
    line = " ".join(lines[0].split())
    assert line.startswith("error: ") and says in line, line
    assert "no.pth" not in line and "loading" not in result.stdout
    assert not output.exists()
