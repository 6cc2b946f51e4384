"""The engine's DICOM SEG export (``fastsam3d_mrml``, slicer-core's MRML, no Slicer application).

The shared DICOM series as a PACS holds it (20 CT slices with their UIDs), read by the core into
a volume node; the oracle answers with balls on the series' own grid (the series has no labels).
Two segments clicked, then ``exportSegmentation`` to ``.dcm`` and to ``.seg.nrrd``: the SEG read
back by the core equals the ``.seg.nrrd`` voxel for voxel, names and colours too, and references
the series. Without a DICOM source, ``.dcm`` is refused in one line and nothing is written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import test_slicer_logic
from test_slicer_logic import place, settle
from test_slicer_mrml import CT_IMAGE, DATA, read_volume_node, volume_node_from

from fastsam3d_core import Volume
from fastsam3d_core.io import read_segmentation, read_volume
from fastsam3d_core.session import OraclePredictor
from fastsam3d_mrml import mrml_io
from fastsam3d_mrml.dicom_export import seg_algorithm, weights_sha256

dicom_seg = pytest.importorskip("fastsam3d_core.io.dicom_seg", reason="needs highdicom")
from fastsam3d_core.io.dicom_source import dicom_series_of  # noqa: E402

PACS_SERIES = DATA / "totalseg_ct/example_ct_dicom_pacs"
pytestmark = pytest.mark.skipif(not PACS_SERIES.is_dir(), reason=f"{PACS_SERIES} not found")
BALL_MM = 25.0


def ball_labels(volume: Volume, centres_ijk: list, radius_mm: float = BALL_MM) -> Volume:
    """Labels on ``volume``'s grid: ball n (from 1) of ``radius_mm`` around centre n."""
    spacing = np.linalg.norm(volume.ijk_to_ras[:3, :3], axis=0)
    grid = np.indices(volume.shape, dtype=np.float32)
    labels = np.zeros(volume.shape, np.uint8)
    for value, centre in enumerate(centres_ijk, start=1):
        offsets = [(grid[a] - centre[a]) * spacing[a] for a in range(3)]
        labels[sum(o**2 for o in offsets) <= radius_mm**2] = value
    return volume.with_array(labels)


@pytest.fixture
def clicked(scene, make_logic):
    """The PACS series in a volume node, its DicomSeries given to the engine, and two segments
    clicked (a ball each): (logic, volume node, series)."""
    image = read_volume(PACS_SERIES)
    node = volume_node_from(scene, image, "CT Body")
    series = dicom_series_of(PACS_SERIES, mrml_io.volume_from_node(node))
    centres = [(200, 256, 10), (330, 256, 10)]
    labels = ball_labels(image, centres)
    logic = make_logic(OraclePredictor(labels, 1), node)
    logic.setDicomSource(node, series)
    place(logic, image.index_to_ras(np.array(centres[0])))
    settle(logic)
    logic.nextSegment()
    logic.setPredictor(OraclePredictor(labels, 2))
    settle(logic)
    place(logic, image.index_to_ras(np.array(centres[1])))
    settle(logic)
    return logic, node, series


def test_the_seg_holds_the_seg_nrrds_voxels_and_references_the_series(clicked, tmp_path: Path):
    logic, node, series = clicked
    volume = mrml_io.volume_from_node(node)
    seg_path = logic.exportSegmentation(str(tmp_path / "x.dcm"))
    nrrd_path = logic.exportSegmentation(str(tmp_path / "x.seg.nrrd"))
    from_seg = dicom_seg.read_dicom_seg(seg_path, volume, series)
    from_nrrd, grid = read_segmentation(nrrd_path)
    assert [s.name for s in from_seg] == [s.name for s in from_nrrd] == ["Segment_1", "Segment_2"]
    offset = np.round(volume.ras_to_index(grid.ijk_to_ras[:3, 3])).astype(int)
    for read, written in zip(from_seg, from_nrrd):
        full = np.zeros(volume.shape, bool)  # the .seg.nrrd holds the segments' extent only
        full[tuple(slice(o, o + n) for o, n in zip(offset, grid.shape))] = written.mask
        assert read.mask.shape == volume.shape
        assert 1000 < read.mask.sum() and np.array_equal(read.mask, full), read.name
        np.testing.assert_allclose(read.color, written.color, atol=0.02)
    assert not (from_seg[0].mask & from_seg[1].mask).any()
    import pydicom

    dataset = pydicom.dcmread(seg_path)
    assert dataset.Modality == "SEG" and dataset.SegmentationType == "BINARY"
    assert dataset.StudyInstanceUID == series.study_uid
    assert dataset.FrameOfReferenceUID == series.frame_of_reference_uid
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    first = dataset.SegmentSequence[0]
    assert first.SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert first.SegmentAlgorithmName == "oracle"
    # The same object in memory, for STOW-RS: a new instance, the same frames.
    in_memory = logic.dicomSegDataset()
    assert in_memory.SOPInstanceUID != dataset.SOPInstanceUID
    assert in_memory.NumberOfFrames == dataset.NumberOfFrames


def test_without_a_dicom_source_a_seg_is_refused_in_one_line(clicked, scene, tmp_path: Path):
    logic, node, _ = clicked
    # Another volume forgets the series of the first.
    other = read_volume_node(scene, CT_IMAGE, "nifti")
    logic.setInputs(other)
    settle(logic)
    assert logic.dicomSource is None
    for export in (lambda: logic.exportSegmentation(str(tmp_path / "y.dcm")),
                   logic.dicomSegDataset):  # fmt: skip
        with pytest.raises(ValueError) as refused:
            export()
        message = str(refused.value)
        assert "did not come from DICOM" in message and "\n" not in message
    assert not list(tmp_path.iterdir())
    # Back on the DICOM volume, the source given for it counts again (nothing clicked there
    # now: the SEG is refused as empty, in one line).
    logic.setInputs(node)
    settle(logic)
    assert logic.dicomSource is not None
    with pytest.raises(ValueError, match="empty"):
        logic.exportSegmentation(str(tmp_path / "z.dcm"))
    assert not list(tmp_path.iterdir())


def algorithm_of(path: Path) -> tuple[str, str]:
    """(algorithm name, parameters) of a SEG's first segment; parameters "" where none."""
    import pydicom

    item = pydicom.dcmread(path).SegmentSequence[0]
    identification = item.SegmentationAlgorithmIdentificationSequence[0]
    return item.SegmentAlgorithmName, str(identification.get("AlgorithmParameters", ""))


def sha256_hex(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_seg_names_the_loaded_model_and_the_identity_of_its_weights(
    clicked, seeded_checkpoint: Path, tmp_path: Path
):
    """The model as it finished loading names the SEG, with the weights it loaded (with an
    adapter, both files' hashes, as the encoder service announces them); a later load that
    fails leaves that model in use, and so in the SEG."""
    from conftest import save_random_adapter, seeded_model

    logic, _, _ = clicked
    # The oracle, given directly: its name, no weights.
    assert algorithm_of(logic.exportSegmentation(str(tmp_path / "oracle.dcm"))) == ("oracle", "")
    adapter = tmp_path / "liver.adapter.pt"
    save_random_adapter(seeded_model("fastsam3d"), adapter)
    logic.setModel("fastsam3d", "cpu", str(seeded_checkpoint), None, None, str(adapter))
    assert logic.waitForIdle(test_slicer_logic.TIMEOUT_S) and not logic.errors
    both = f"{sha256_hex(seeded_checkpoint)}+{sha256_hex(adapter)}"
    identity = hashlib.sha256(both.encode()).hexdigest()
    name, parameters = algorithm_of(logic.exportSegmentation(str(tmp_path / "model.dcm")))
    assert name == "fastsam3d" and identity in parameters
    # Another model whose load fails: the loaded one still made the segments.
    logic.setModel("sam-med3d-turbo", "cpu", str(tmp_path / "missing.pth"))
    assert logic.waitForIdle(test_slicer_logic.TIMEOUT_S) and logic.errors
    assert logic.loadedModel is None
    name, parameters = algorithm_of(logic.exportSegmentation(str(tmp_path / "after.dcm")))
    assert name == "fastsam3d" and identity in parameters
    # A predictor given directly that carries no weights' identity: none in the SEG.
    oracle = OraclePredictor(Volume(np.zeros((2, 2, 2)), np.eye(4)))
    assert weights_sha256(oracle) == "" and seg_algorithm(None, oracle).name == "oracle"
