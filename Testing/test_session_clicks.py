"""A click's one form: the caller's id goes into a Session and comes back unchanged, through
moves, removals, undo and redo, in whichever segment the click lies."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED
from scipy import ndimage

from fastsam3d_core.geometry import Crop, Volume
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import OraclePredictor, Session
from fastsam3d_core.session.state import Click

DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test scans not found at {DATA}")

CT_3MM = ("totalseg_ct/example_ct_3mm.nii.gz", "totalseg_ct/example_seg_3mm.nii.gz")
LIVER = 5
# Between two clicks of one crop: in-plane, since the scan is only 30 slices (90 mm) deep.
STEP = np.array([6.0, 6.0, 0.0])


class RecordingPredictor:
    """A real oracle that keeps the points and labels of every decode."""

    def __init__(self, oracle: OraclePredictor) -> None:
        self.oracle, self.decoded = oracle, []

    def encode(self, crop: Crop):
        return self.oracle.encode(crop)

    def decode(self, embedding, points, labels, mask_input):
        self.decoded.append((points.copy(), labels.copy()))
        return self.oracle.decode(embedding, points, labels, mask_input)


@pytest.fixture(scope="module")
def ct():
    image = read_volume(DATA / CT_3MM[0])
    labels = read_volume(DATA / CT_3MM[1])
    return image, labels


def deepest_ras(image: Volume, mask: np.ndarray) -> np.ndarray:
    depth = ndimage.distance_transform_edt(mask)
    return image.index_to_ras(np.array(np.unravel_index(np.argmax(depth), mask.shape), float))


def test_a_click_is_stored_by_value_from_any_sequence():
    click = Click(np.array([1, 2.5, -3]), 1, "P1")
    assert click.point_ras == (1.0, 2.5, -3.0) and type(click.point_ras[0]) is float
    assert click.positive is True
    assert click == Click((1.0, 2.5, -3.0), True, "P1")
    assert len({click, Click([1, 2.5, -3], True, "P1")}) == 1
    assert Click((0, 0, 0)).click_id is None and Click((0, 0, 0)).positive is True
    with pytest.raises(ValueError, match=r"\(R, A, S\)"):
        Click((1.0, 2.0))


def test_the_callers_click_ids_round_trip_through_edits_undo_and_redo(ct):
    image, labels = ct
    liver = labels.array == LIVER
    session = Session(image, OraclePredictor(labels, LIVER))
    first = deepest_ras(image, liver)
    session.add_point(first, True, "P-a")
    session.add_point(first + STEP, False, "N-b")
    session.add_point(first - STEP)  # no id given: the session makes one up
    made_up = session.clicks()[2].click_id
    assert isinstance(made_up, str) and made_up not in ("P-a", "N-b")
    assert session.clicks() == [
        Click(first, True, "P-a"),
        Click(first + STEP, False, "N-b"),
        Click(first - STEP, True, made_up),
    ]
    # Moved within its crop, and out of it (to the far corner): the id stays.
    session.move_point("N-b", first + 1.5 * STEP)
    assert session.clicks()[1] == Click(first + 1.5 * STEP, False, "N-b")
    corner = image.index_to_ras(np.array([2.0, 2.0, 2.0]))
    session.move_point("P-a", corner)
    assert [c.click_id for c in session.clicks()] == ["N-b", made_up, "P-a"]
    assert session.clicks()[2] == Click(corner, True, "P-a")
    session.remove_point(made_up)  # its crop is replayed, so becomes the newest
    assert [c.click_id for c in session.clicks()] == ["P-a", "N-b"]
    for expected in (
        ["N-b", made_up, "P-a"],  # the removal undone: the click is back with its id
        ["P-a", "N-b", made_up],  # the move out of the crop undone
    ):
        session.undo()
        assert [c.click_id for c in session.clicks()] == expected
    assert session.clicks()[0] == Click(first, True, "P-a")
    session.redo()
    session.redo()
    assert session.clicks() == [Click(corner, True, "P-a"), Click(first + 1.5 * STEP, False, "N-b")]
    with pytest.raises(KeyError, match="no longer part of the session"):
        session.remove_point(made_up)
    with pytest.raises(KeyError, match="no longer part of the session"):
        session.move_point("P-zzz", first)


def test_a_click_of_another_segment_is_edited_by_id_and_the_current_segment_stays(ct):
    image, labels = ct
    liver = labels.array == LIVER
    session = Session(image, OraclePredictor(labels, LIVER))
    point = deepest_ras(image, liver)
    session.add_point(point, True, "liver-1")
    session.add_point(point + STEP, True, "liver-2")
    held = session.mask(1).copy()
    session.new_segment()
    session.add_point(image.index_to_ras(np.array([2.0, 2.0, 2.0])), True, "other-1")
    result = session.remove_point("liver-2")
    assert result.segment_id == 2 and session.current_segment.segment_id == 2
    assert [c.click_id for c in session.clicks()] == ["other-1"]
    assert [c.click_id for c in session.clicks(1)] == ["liver-1"]
    result = session.remove_point("liver-1")
    assert result.changed_segments == (1,) and not session.mask(1).any()
    assert session.clicks(1) == [] and session.segments[0].crops == ()
    session.undo()
    assert [c.click_id for c in session.clicks(1)] == ["liver-1"]
    session.undo()
    assert [c.click_id for c in session.clicks(1)] == ["liver-1", "liver-2"]
    assert np.array_equal(session.mask(1), held)
    with pytest.raises(KeyError):
        session.clicks(7)


def test_the_decoder_gets_each_click_at_its_crop_index(ct):
    image, labels = ct
    predictor = RecordingPredictor(OraclePredictor(labels, LIVER))
    session = Session(image, predictor)
    point = deepest_ras(image, labels.array == LIVER)
    session.add_point(point, True, "P1")
    session.add_point(point + [4.5, -3.0, 1.5], False, "N1")
    grid = session.current_segment.crops[0].grid
    points, labels_given = predictor.decoded[-1]
    expected = np.array([grid.to_crop(point), grid.to_crop(point + [4.5, -3.0, 1.5])])
    assert points.dtype == np.float32 and points.shape == (2, 3)
    np.testing.assert_array_equal(points, expected.astype(np.float32))
    assert labels_given.tolist() == [1, 0]
