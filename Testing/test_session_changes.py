"""The core's result says what changed: each changed segment, the smallest voxel box holding its
changes, and its voxels there, checked against a real before/after diff of the masks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED
from scipy import ndimage

from fastsam3d_core.geometry import Crop, Volume
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import OraclePredictor, Result, Session

DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test scans not found at {DATA}")

CT_3MM = ("totalseg_ct/example_ct_3mm.nii.gz", "totalseg_ct/example_seg_3mm.nii.gz")
LIVER = 5
# In-plane steps between clicks of one crop: the scan is only 30 slices (90 mm) deep.
STEP = np.array([6.0, 6.0, 0.0])


class NearClicksPredictor:
    """The ground truth near the clicks: a real predictor whose answer follows every click.

    The object is the oracle's truth within 20 crop voxels of a positive click and farther than
    8 from every negative one, so moving or removing a click changes the mask.
    """

    def __init__(self, oracle: OraclePredictor) -> None:
        self.oracle = oracle

    def encode(self, crop: Crop):
        return self.oracle.encode(crop)

    def decode(self, embedding, points, labels, mask_input):
        grid = np.indices(embedding.shape, dtype=np.float32).reshape(3, -1).T
        near = np.zeros(len(grid), bool)
        for point, label in zip(points, labels):
            distance = np.linalg.norm(grid - point, axis=1)
            near = near | (distance < 20) if label else near & (distance >= 8)
        inside = embedding & near.reshape(embedding.shape)
        return np.where(inside, 10.0, -10.0).astype(np.float32)


@pytest.fixture(scope="module")
def ct():
    return read_volume(DATA / CT_3MM[0]), read_volume(DATA / CT_3MM[1])


def deepest_ras(image: Volume, mask: np.ndarray) -> np.ndarray:
    depth = ndimage.distance_transform_edt(mask)
    return image.index_to_ras(np.array(np.unravel_index(np.argmax(depth), mask.shape), float))


def snapshot(session: Session) -> dict[int, np.ndarray]:
    return {s.segment_id: session.mask(s.segment_id).astype(bool) for s in session.segments}


def assert_result_says_what_changed(
    before: dict[int, np.ndarray], session: Session, result: Result
) -> None:
    """The result against a real diff: the same segments, each one's box exactly the bounding
    box of its changed voxels, its voxels there those of the mask after the edit."""
    after = snapshot(session)
    changed = [sid for sid in sorted(after) if sid in before and (before[sid] != after[sid]).any()]
    assert result.changed_segments == tuple(changed)
    assert [change.segment_id for change in result.changes] == changed
    for change in result.changes:
        differing = np.argwhere(before[change.segment_id] != after[change.segment_id])
        np.testing.assert_array_equal(change.lo_ijk, differing.min(axis=0))
        np.testing.assert_array_equal(change.hi_ijk, differing.max(axis=0) + 1)
        box = tuple(slice(a, b) for a, b in zip(change.lo_ijk, change.hi_ijk))
        assert change.mask.dtype == bool and not change.mask.flags.writeable
        np.testing.assert_array_equal(change.mask, after[change.segment_id][box])
        written = before[change.segment_id].copy()
        written[box] = change.mask
        np.testing.assert_array_equal(written, after[change.segment_id])
    if not changed:
        assert result.changed_lo is None and result.changed_hi is None
        return
    np.testing.assert_array_equal(result.changed_lo, np.min([c.lo_ijk for c in result.changes], 0))
    np.testing.assert_array_equal(result.changed_hi, np.max([c.hi_ijk for c in result.changes], 0))


@pytest.mark.parametrize("protect", [True, False], ids=["protect", "overwrite"])
def test_every_edit_says_which_segments_and_voxels_changed(ct, protect):
    image, labels = ct
    liver = labels.array == LIVER
    session = Session(
        image, NearClicksPredictor(OraclePredictor(labels, LIVER)), protect_other_segments=protect
    )
    first = deepest_ras(image, liver)
    edits = [
        lambda: session.add_point(first, True, "P1"),
        lambda: session.add_point(first + STEP, False, "N1"),
        lambda: session.move_point("P1", first - STEP),
        lambda: session.add_point(first + 4 * STEP, True, "P2"),
        lambda: session.add_point(image.index_to_ras(np.array([2.0, 2.0, 2.0])), True, "far"),
        lambda: session.new_segment(),
        lambda: session.add_point(first - STEP, True, "Q1"),  # in segment 1's voxels
        lambda: session.remove_point("N1"),  # in segment 1, while segment 2 is current
        lambda: session.reset(),
        session.undo,
        session.undo,
        session.undo,
        session.redo,
        session.undo,
        session.undo,
        session.undo,
        session.redo,
        session.redo,
        lambda: session.select_segment(1),
        lambda: session.remove_point("P2"),
    ]
    kept = []
    for edit in edits:
        before = snapshot(session)
        result = edit()
        assert_result_says_what_changed(before, session, result)
        kept += [(change, change.mask.copy()) for change in result.changes]
    two_segments = [r for r in kept if r[0].segment_id == 2]
    assert two_segments, "the test should change a second segment"
    # A change's voxels stay as they were, through later edits, undo and redo.
    for change, copy in kept:
        np.testing.assert_array_equal(change.mask, copy)


def test_an_edit_in_a_segment_that_takes_anothers_voxels_changes_both(ct):
    image, labels = ct
    liver = labels.array == LIVER
    session = Session(image, OraclePredictor(labels, LIVER), protect_other_segments=False)
    session.add_point(deepest_ras(image, liver))
    session.new_segment()
    before = snapshot(session)
    result = session.add_point(deepest_ras(image, liver) + STEP)
    assert result.changed_segments == (1, 2)
    assert_result_says_what_changed(before, session, result)


def test_change_from_brings_a_callers_copy_to_the_session(ct):
    image, labels = ct
    session = Session(image, OraclePredictor(labels, LIVER))
    session.add_point(deepest_ras(image, labels.array == LIVER))
    mask = session.mask(1).astype(bool)
    assert session.change_from(1, mask) is None
    for held in (None, np.zeros_like(mask), labels.array == 6, mask ^ (labels.array == 1)):
        change = session.change_from(1, held)
        reference = np.zeros_like(mask) if held is None else held
        differing = np.argwhere(reference != mask)
        np.testing.assert_array_equal(change.lo_ijk, differing.min(axis=0))
        np.testing.assert_array_equal(change.hi_ijk, differing.max(axis=0) + 1)
        box = tuple(slice(a, b) for a, b in zip(change.lo_ijk, change.hi_ijk))
        written = reference.copy()
        written[box] = change.mask
        np.testing.assert_array_equal(written, mask)
    change = session.change_from(1, None)
    kept = change.mask.copy()
    assert kept.any()
    session.reset()  # the change is a copy: later edits leave it as it was
    np.testing.assert_array_equal(change.mask, kept)
    with pytest.raises(ValueError, match="shaped like the volume"):
        session.change_from(1, mask[1:])
