"""Segment by name in the core session (issue 29): ``Session.add_text`` on the real multi-label CT.

With a perfect text "model" (the labelmap and its names) the geometry is tested end to end: the
crops tiled over the volume, each encoded once and composed into one new segment named by the
text; one undo step; clicks afterwards refine it inside the text's crops without encoding again;
bad input refused in one line with nothing changed.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED

from fastsam3d_core.geometry import Volume
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import OraclePredictor, Session
from fastsam3d_core.session.text_oracle import OracleTextPredictor
from fastsam3d_core.session.text_prompt import NO_TEXT_PATH, volume_tiles

DATA = SHARED / "data" / "totalseg_ct"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test scans not found at {DATA}")
SPLEEN, LIVER = 1, 5  # TotalSegmentator's label values


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.fixture(scope="module")
def ct() -> tuple[Volume, Volume]:
    return read_volume(DATA / "example_ct_3mm.nii.gz"), read_volume(DATA / "example_seg_3mm.nii.gz")


@pytest.fixture
def oracle(ct) -> OracleTextPredictor:
    return OracleTextPredictor(ct[1], {"liver": LIVER, "spleen": SPLEEN})


class CountingOracle(OracleTextPredictor):
    """The oracle, counting its encoder runs (a real subclass, not a mock)."""

    encodes = 0

    def encode(self, crop):
        self.encodes += 1
        return super().encode(crop)


def test_the_tiles_cover_every_voxel_of_the_volume(ct):
    image = ct[0]
    grids = volume_tiles(image)
    # 366 x 303 x 90 mm: two crops of 192 mm along the first two axes, one along the third.
    assert len(grids) == 4
    index = np.argwhere(np.ones(image.shape, bool))
    points = image.index_to_ras(index.astype(float))
    covered = np.zeros(len(index), bool)
    for grid in grids:
        crop_index = grid.to_crop(points)
        covered |= np.all((crop_index >= -0.5) & (crop_index < grid.size - 0.5), axis=1)
    assert covered.all()


def test_text_makes_a_named_segment_over_the_whole_volume(ct, oracle):
    image, labels = ct
    session = Session(image, oracle)
    told = []
    result = session.add_text("  Liver ", progress=lambda done, total: told.append((done, total)))
    assert [s.name for s in session.segments] == ["Segment_1", "Liver"]
    assert result.segment_id == session.current_segment.segment_id == 2
    assert told == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert result.encoder_ran
    assert dice(session.mask(), labels.array == LIVER) > 0.97
    assert not session.mask(1).any()
    spleen = session.add_text("spleen")
    assert not spleen.encoder_ran  # every crop was cached by the first text
    assert dice(session.mask(), labels.array == SPLEEN) > 0.95
    assert dice(session.mask(2), labels.array == LIVER) > 0.97  # the liver stays


def test_text_is_one_undo_step(ct, oracle):
    image = ct[0]
    session = Session(image, oracle)
    session.add_text("liver")
    undone = session.undo()
    assert [s.segment_id for s in session.segments] == [1]
    assert undone.segment_id == 1
    assert 2 in undone.changed_segments and not session.mask(2).any()
    session.redo()
    assert [s.name for s in session.segments] == ["Segment_1", "liver"]
    assert session.mask(2).any()


def test_clicks_after_text_refine_it_in_the_texts_crops_without_encoding(ct):
    image, labels = ct
    oracle = CountingOracle(labels, {"liver": LIVER})
    session = Session(image, oracle)
    session.add_text("liver")
    assert oracle.encodes == 4
    spleen_voxels = np.argwhere(labels.array == SPLEEN)
    spleen_voxel = spleen_voxels[len(spleen_voxels) // 2]
    # A click on the spleen: the (oracle) decoder adds the spleen to the liver's segment.
    clicked = session.add_point_ijk(spleen_voxel.astype(float))
    assert not clicked.encoder_ran and oracle.encodes == 4
    assert clicked.segment_id == 2
    both = (labels.array == LIVER) | (labels.array == SPLEEN)
    # The click's crop holds part of the liver and the spleen, the other crops the text alone.
    assert session.mask()[tuple(spleen_voxel)]
    assert dice(session.mask(), both) > dice(session.mask(), labels.array == LIVER) - 0.2
    # Removing the click goes back to the text's mask there.
    session.remove_point(0)
    assert dice(session.mask(), labels.array == LIVER) > 0.97
    assert not session.mask()[tuple(spleen_voxel)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("   ", "empty text: give the name of a structure, e.g. 'liver'"),
        ("kidney", "'kidney' is not among the names this model knows (liver, spleen)"),
    ],
)
def test_bad_text_is_refused_in_one_line_with_nothing_changed(ct, oracle, text, message):
    session = Session(ct[0], oracle)
    with pytest.raises(ValueError) as refused:
        session.add_text(text)
    assert str(refused.value) == message and "\n" not in message
    assert len(session.segments) == 1 and session.undo().changed_segments == ()


def test_a_model_without_a_text_path_says_so(ct):
    image, labels = ct
    session = Session(image, OraclePredictor(labels, LIVER))
    with pytest.raises(ValueError, match="^this model has no text path") as refused:
        session.add_text("liver")
    assert str(refused.value) == NO_TEXT_PATH
    assert len(session.segments) == 1


def test_the_seeded_model_with_a_text_adapter_segments_by_name_and_clicks_reuse_its_crops(
    ct, tmp_path
):
    """The model's own text path (seeded, untrained: no Dice asked of it) through the adapter
    file's bank: a named segment from every crop, and a click inside runs the decoder only."""
    from text_adapters import model_with_adapter, save_text_adapter

    from fastsam3d_core.session.text_prompt import TextVocabulary

    adapter = save_text_adapter(tmp_path / "text.pt")
    session = Session(ct[0], model_with_adapter(adapter))
    vocabulary = TextVocabulary.from_adapter(adapter)
    assert vocabulary.names == ("liver", "spleen")
    told = []
    result = session.add_text("Liver", vocabulary, lambda done, total: told.append(done))
    assert told == [1, 2, 3, 4] and result.encoder_ran
    assert session.current_segment.name == "Liver" and len(session.current_segment.crops) == 4
    before = session.mask().copy()
    assert before.any()
    clicked = session.add_point_ijk((60.0, 50.0, 15.0), positive=False)
    assert not clicked.encoder_ran  # the text's crop embedding, cached
    assert not np.array_equal(session.mask(), before)
    # The click was decoded with the text's prompts (the model's text path keeps the text).
    clicked_crop = next(c for c in session.current_segment.crops if c.clicks)
    assert clicked_crop.text is not None and clicked_crop.prior is not None
    again = session.add_text("spleen", vocabulary)
    assert not again.encoder_ran  # the text features of every crop, cached
    with pytest.raises(ValueError, match="^'kidney' is not in this adapter's vocabulary"):
        session.add_text("kidney", vocabulary)


def test_an_adapter_without_a_text_path_says_so_in_one_line(tmp_path):
    from conftest import save_random_adapter, seeded_model

    from fastsam3d_core.session.text_prompt import TextVocabulary

    adapter = tmp_path / "clicks.pt"
    save_random_adapter(seeded_model("fastsam3d"), adapter)
    with pytest.raises(ValueError) as refused:
        TextVocabulary.from_adapter(adapter)
    message = str(refused.value)
    assert "an adapter without a text path" in message and "\n" not in message
