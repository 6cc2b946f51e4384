"""Sessions end to end on real scans: oracle round trips, crops, cache, history, segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED
from scipy import ndimage
from test_geometry import rotation

from fastsam3d_core.geometry import Crop, Volume
from fastsam3d_core.geometry.volume import apply_affine
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import ModelPredictor, OraclePredictor, Session

DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test scans not found at {DATA}")

BRATS = (
    "brats2021_flair_edema/imagesTr/BraTS2021_01646.nii.gz",
    "brats2021_flair_edema/labelsTr/BraTS2021_01646.nii.gz",
)
AORTA = ("totalseg_ct/aorta_ct.nii.gz", "totalseg_ct/aorta_label.nii.gz")
CT_3MM = ("totalseg_ct/example_ct_3mm.nii.gz", "totalseg_ct/example_seg_3mm.nii.gz")


class CountingPredictor:
    """A real oracle that counts how often each stage runs."""

    def __init__(self, oracle: OraclePredictor) -> None:
        self.oracle, self.encodes, self.decodes = oracle, 0, 0

    def encode(self, crop: Crop):
        self.encodes += 1
        return self.oracle.encode(crop)

    def decode(self, embedding, points, labels, mask_input):
        self.decodes += 1
        return self.oracle.decode(embedding, points, labels, mask_input)


def load_pair(pair: tuple[str, str]) -> tuple[Volume, Volume]:
    return read_volume(DATA / pair[0]), read_volume(DATA / pair[1])


def oblique_copy(volume: Volume) -> Volume:
    """The same voxels, rotated 25° and 15° about the volume's centre and axis-permuted."""
    permute = np.eye(4)[[2, 0, 1, 3]]  # new i is old k, …: the array is transposed to match
    turn = np.eye(4)
    turn[:3, :3] = rotation(0, 25) @ rotation(1, 15)
    centre = volume.index_to_ras((np.array(volume.shape) - 1) / 2)
    to_centre, back = np.eye(4), np.eye(4)
    to_centre[:3, 3], back[:3, 3] = -centre, centre
    affine = back @ turn @ to_centre @ volume.ijk_to_ras @ permute.T
    return Volume(np.transpose(volume.array, (2, 0, 1)), affine)


def deepest_voxel(mask: np.ndarray) -> np.ndarray:
    return np.array(np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return (
        2 * float(np.logical_and(a, b).sum()) / float(a.astype(bool).sum() + b.astype(bool).sum())
    )


@pytest.mark.parametrize("oblique", [False, True], ids=["native", "oblique"])
@pytest.mark.parametrize(
    "pair,label",
    [(BRATS, None), (CT_3MM, 1), (CT_3MM, 86), (CT_3MM, 6)],
    ids=["brats", "ct-1", "ct-86", "ct-6"],
)
def test_one_click_oracle_round_trip(pair, label, oblique):
    image, labels = load_pair(pair)
    if oblique:
        image, labels = oblique_copy(image), oblique_copy(labels)
    truth = labels.array != 0 if label is None else labels.array == label
    session = Session(image, OraclePredictor(labels, label))
    result = session.add_point_ijk(deepest_voxel(truth))
    assert result.mask.shape == image.shape and result.mask.dtype == np.uint8
    assert dice(result.mask, truth) >= 0.95, dice(result.mask, truth)


@pytest.mark.parametrize("oblique", [False, True], ids=["native", "oblique"])
def test_object_larger_than_a_crop_is_merged_across_crops(oblique):
    image, labels = load_pair(AORTA)
    if oblique:
        image, labels = oblique_copy(image), oblique_copy(labels)
    truth = labels.array != 0
    predictor = CountingPredictor(OraclePredictor(labels))
    session = Session(image, predictor)
    first = session.add_point_ijk(deepest_voxel(truth))
    assert dice(first.mask, truth) < 0.95, "the aorta should not fit in one crop"
    for _ in range(6):
        missed = truth & (session.mask() == 0)
        outside = np.array(
            [
                not any(
                    c.grid.contains(image.index_to_ras(v)) for c in session.current_segment.crops
                )
                for v in np.argwhere(missed)
            ]
        )
        if not outside.any():
            break
        candidates = np.zeros_like(missed)
        candidates[tuple(np.argwhere(missed)[outside].T)] = True
        session.add_point_ijk(deepest_voxel(candidates))
    assert dice(session.mask(), truth) >= 0.95, dice(session.mask(), truth)
    assert predictor.encodes == len(session.current_segment.crops) >= 2


@pytest.fixture(scope="module")
def brats():
    return load_pair(BRATS)


def test_encoder_runs_once_per_crop(brats):
    image, labels = brats
    predictor = CountingPredictor(OraclePredictor(labels))
    session = Session(image, predictor)
    centre = deepest_voxel(labels.array != 0)
    results = [
        session.add_point_ijk(centre + offset, positive)
        for offset, positive in [((0, 0, 0), True), ((3, 0, 0), False), ((0, 4, 1), True)]
    ]
    assert [r.encoder_ran for r in results] == [True, False, False]
    assert (predictor.encodes, predictor.decodes) == (1, 3)
    session.undo()
    session.add_point_ijk(centre, True)
    assert predictor.encodes == 1


def test_click_outside_crop_opens_new_crop_without_erasing(brats):
    image, labels = brats
    truth = labels.array != 0
    session = Session(image, OraclePredictor(labels))
    first = session.add_point_ijk(deepest_voxel(truth)).mask.copy()
    far_corner = np.array([2.0, 2.0, 2.0])
    second = session.add_point_ijk(far_corner, positive=False)
    assert second.encoder_ran and len(session.current_segment.crops) == 2
    assert np.array_equal(second.mask, first), (
        "a crop with no object must not erase the other's voxels"
    )


class BallPredictor:
    """A model that keeps its mask prompt and paints a ball of its click's sign around each
    click (8 crop voxels), in 32³ cells: how the real decoder treats a mask prompt, exactly."""

    def encode(self, crop: Crop):
        return None

    def decode(self, embedding, points, labels, mask_input):
        logits = np.full((32, 32, 32), -6.0) if mask_input is None else np.array(mask_input)
        cells = np.stack(np.indices(logits.shape), axis=-1) * 4 + 1.5  # cell centres, crop voxels
        for point, label in zip(points.reshape(-1, 3), labels.reshape(-1)):
            logits[np.linalg.norm(cells - point, axis=-1) <= 8] = 6.0 if label else -6.0
        return logits.astype(np.float32)


def test_a_new_crop_starts_from_the_segment_it_overlaps():
    volume = Volume(np.ones((400, 60, 60), np.float32), np.diag([1.5, 1.5, 1.5, 1.0]))
    session = Session(volume, BallPredictor())
    session.add_point_ijk([100.0, 30.0, 30.0])  # crop 1 covers i = 36 to 163
    kept = session.add_point_ijk([156.0, 30.0, 30.0]).mask.astype(bool).copy()
    assert kept[150:163].any(), "the second ball reaches into the next crop's footprint"
    # Outside crop 1: a new crop over i = 126 to 253, whose negative ball stays beyond i = 180.
    after = session.add_point_ijk([190.0, 30.0, 30.0], positive=False).mask.astype(bool)
    assert len(session.current_segment.crops) == 2
    # The overlap's voxels pass through the new crop's 32³ mask prompt, whose cells lie 2 voxels
    # off crop 1's: the ball keeps its place and most of its voxels, its rim is re-drawn.
    assert not (after & ~kept).any()
    assert after[126:].sum() >= 0.75 * kept[126:].sum(), "a new crop erased the segment"
    session.remove_point(0)  # replays crop 1, then crop 2 (its prompt held crop 1's voxels)
    assert not session.mask()[90:110].any() and session.mask()[150:163].any()
    session.undo()
    session.remove_point(1)  # the click at 156: its voxels leave crop 2's prompt too
    assert session.mask()[90:110].any() and not session.mask()[140:170].any()
    session.undo()
    session.move_point(1, volume.index_to_ras(np.array([120.0, 30.0, 30.0])))
    assert session.mask()[112:128].any() and not session.mask()[145:170].any()


def test_undo_redo_remove_and_reset(brats):
    image, labels = brats
    truth = labels.array != 0
    session = Session(image, OraclePredictor(labels))
    empty = session.mask().copy()
    one = session.add_point_ijk(deepest_voxel(truth)).mask.copy()
    two = session.add_point_ijk(np.array([5.0, 5.0, 5.0]), positive=False)
    assert len(session.clicks()) == 2
    assert np.array_equal(session.undo().mask, one)
    assert np.array_equal(session.undo().mask, empty)
    assert session.undo().changed_lo is None  # nothing left to undo
    assert np.array_equal(session.redo().mask, one)
    assert np.array_equal(session.redo().mask, two.mask)
    # The oracle ignores clicks, so the crop's result stands while any click is left in it.
    assert np.array_equal(session.remove_point(0).mask, two.mask)
    assert [c.positive for c in session.clicks()] == [False]
    assert not session.remove_point(0).mask.any() and session.clicks() == []
    session.undo()
    assert not session.reset().mask.any() and session.clicks() == []
    assert np.array_equal(session.undo().mask, two.mask) and len(session.clicks()) == 1
    with pytest.raises(IndexError):
        session.remove_point(5)


def test_result_box_covers_every_change(brats):
    image, labels = brats
    session = Session(image, OraclePredictor(labels))
    before = session.mask().copy()
    result = session.add_point_ijk(deepest_voxel(labels.array != 0))
    changed = np.argwhere(result.mask != before)
    assert np.all(changed.min(axis=0) >= result.changed_lo) and np.all(
        changed.max(axis=0) < result.changed_hi
    )
    with pytest.raises(ValueError, match="read-only"):
        result.mask[0, 0, 0] = 1


def test_segments_never_overwrite_each_other_unless_asked(brats):
    image, labels = brats
    truth = labels.array != 0
    click = deepest_voxel(truth)
    for protect in (True, False):
        session = Session(image, OraclePredictor(labels), protect_other_segments=protect)
        first = session.add_point_ijk(click).mask.copy()
        created = session.new_segment("Oedema again")
        assert created.segment_id == 2 and not created.mask.any()
        second = session.add_point_ijk(click).mask
        if protect:
            assert np.array_equal(session.mask(1), first) and not second.any()
        else:
            assert not session.mask(1).any() and np.array_equal(second, first)
        assert not np.any(session.mask(1) & session.mask(2))
        session.select_segment(1)
        assert session.current_segment.name == "Segment_1"
    with pytest.raises(KeyError):
        session.select_segment(7)


def test_undo_of_new_segment_removes_it(brats):
    image, labels = brats
    session = Session(image, OraclePredictor(labels))
    session.new_segment()
    assert [s.segment_id for s in session.segments] == [1, 2]
    session.undo()
    assert [s.segment_id for s in session.segments] == [1]
    assert session.current_segment.segment_id == 1


@pytest.mark.parametrize(
    "point,message",
    [
        ((1e4, 0, 0), "outside the volume, which spans R "),
        ((np.nan, 0, 0), "finite"),
        ((1, 2), "three"),
    ],
)
def test_points_outside_or_malformed_are_refused(brats, point, message):
    image, labels = brats
    session = Session(image, OraclePredictor(labels))
    with pytest.raises(ValueError, match=message):
        session.add_point(point)


def test_outside_message_gives_the_volume_extent(brats):
    image, labels = brats
    corner_ras = image.index_to_ras(np.array(image.shape) - 1)
    with pytest.raises(ValueError) as error:
        Session(image, OraclePredictor(labels)).add_point(corner_ras + 50)
    low_r = min(image.index_to_ras(np.zeros(3))[0], corner_ras[0])
    assert f"R {low_r:.1f}.." in str(error.value)


def test_predictor_must_follow_protocol(brats):
    with pytest.raises(TypeError, match="neither a Sam3D"):
        Session(brats[0], object())


def test_uncertainty_is_high_only_at_the_boundary(brats):
    image, labels = brats
    truth = labels.array != 0
    session = Session(image, OraclePredictor(labels, confidence=2.0))
    session.add_point_ijk(deepest_voxel(truth))
    result = session.uncertainty(samples=4)
    assert result.probability.array.shape == image.shape
    assert np.all((result.probability.array >= 0) & (result.probability.array <= 1))
    interior = ndimage.binary_erosion(truth, iterations=3)
    assert result.probability.array[interior].min() > 0.8
    assert result.entropy.array.max() > 0.5 and result.most_uncertain_ras is not None


def test_real_model_session_uses_the_cached_embedding(fastsam3d_seeded):
    rng = np.random.default_rng(2)
    affine = np.diag([1.2, 0.9, 2.0, 1.0])
    image = Volume(rng.normal(100, 20, (90, 100, 60)).astype(np.float32), affine)
    predictor = ModelPredictor(fastsam3d_seeded)
    session = Session(image, predictor)
    first = session.add_point_ijk((45, 50, 30))
    second = session.add_point_ijk((40, 52, 31), positive=False)
    assert first.encoder_ran and not second.encoder_ran
    assert torch.as_tensor(second.logits).shape == (32, 32, 32)
    assert second.mask.shape == image.shape
    assert len(session.embeddings) == 1


def test_moving_a_click_within_its_crop_keeps_its_place_and_is_one_edit(fastsam3d_seeded):
    rng = np.random.default_rng(3)
    image = Volume(rng.normal(100, 20, (90, 100, 60)).astype(np.float32), np.diag([1.2, 0.9, 2, 1]))
    points = [(45, 50, 30, True), (40, 52, 31, False), (50, 47, 29, True)]
    session = Session(image, ModelPredictor(fastsam3d_seeded))
    for i, j, k, positive in points:
        session.add_point_ijk((i, j, k), positive)
    before = session.mask().copy()
    moved_to = image.index_to_ras(np.array([38.0, 55.0, 33.0]))
    result = session.move_point(1, moved_to)
    assert not result.encoder_ran and len(session.current_segment.crops) == 1
    assert [c.positive for c in session.clicks()] == [True, False, True]
    np.testing.assert_allclose(session.clicks()[1].point_ras, moved_to)
    # The same as placing the clicks in that order from the start.
    fresh = Session(image, ModelPredictor(fastsam3d_seeded))
    for i, j, k, positive in [points[0], (38, 55, 33, False), points[2]]:
        expected = fresh.add_point_ijk((i, j, k), positive)
    assert np.array_equal(result.mask, expected.mask)
    assert not np.array_equal(result.mask, before), "the seeded model should react to the move"
    assert np.array_equal(session.undo().mask, before)
    assert np.array_equal(session.redo().mask, expected.mask)


def test_moving_a_click_out_of_its_crop_moves_it_to_the_crop_there(brats):
    image, labels = brats
    predictor = CountingPredictor(OraclePredictor(labels))
    session = Session(image, predictor)
    inside = deepest_voxel(labels.array != 0)
    session.add_point_ijk(inside)
    far = session.add_point_ijk(np.array([2.0, 2.0, 2.0]), positive=False)
    assert len(session.current_segment.crops) == 2
    assert not session.current_segment.crops[0].grid.contains(image.index_to_ras([3.0, 2, 2]))
    result = session.move_point(0, image.index_to_ras([3.0, 2, 2]))
    assert len(session.current_segment.crops) == 1, "the first crop lost its only click"
    assert [c.positive for c in session.clicks()] == [False, True]
    only_far = Session(image, OraclePredictor(labels)).add_point_ijk(np.array([2.0, 2.0, 2.0]))
    assert np.array_equal(result.mask, only_far.mask), "the first crop's voxels must be gone"
    assert predictor.encodes == 2 and not result.encoder_ran
    assert np.array_equal(session.undo().mask, far.mask)
    assert len(session.current_segment.crops) == 2
    with pytest.raises(IndexError):
        session.move_point(7, image.index_to_ras(inside))
    with pytest.raises(ValueError, match="outside the volume"):
        session.move_point(0, (1e4, 0, 0))


def test_a_click_keeps_its_id_when_moved_and_ids_are_never_reused(brats):
    image, labels = brats
    session = Session(image, OraclePredictor(labels))
    inside = deepest_voxel(labels.array != 0)
    session.add_point_ijk(inside, click_id="P1")
    session.add_point(image.index_to_ras(inside + 2.0), positive=False)
    automatic = session.clicks()[1].click_id
    assert automatic != "P1" and session.click_index(automatic) == 1
    with pytest.raises(ValueError, match="already has a click 'P1'"):
        session.add_point_ijk(inside + 1.0, click_id="P1")
    far = image.index_to_ras([3.0, 2, 2])  # out of the first crop: the click changes crops
    session.move_point(session.click_index("P1"), far)
    assert [c.click_id for c in session.clicks()] == [automatic, "P1"]
    session.undo()
    assert [c.click_id for c in session.clicks()] == ["P1", automatic]
    with pytest.raises(KeyError, match="no click 'P7'"):
        session.click_index("P7")
    session.remove_point(1)
    session.add_point_ijk(inside + 3.0)
    assert session.clicks()[1].click_id != automatic
    # A caller's id that looks like an automatic one is skipped, not given again.
    session.add_point_ijk(inside + 4.0, click_id="click-3")
    session.add_point_ijk(inside + 5.0)
    ids = [c.click_id for c in session.clicks()]
    assert len(set(ids)) == len(ids), ids


def test_would_encode_is_the_crop_choice_of_a_click(brats):
    image, labels = brats
    session = Session(image, CountingPredictor(OraclePredictor(labels)))
    inside = image.index_to_ras(deepest_voxel(labels.array != 0))
    assert not session.would_encode((1e4, 0.0, 0.0)) and not session.would_encode((1.0, 2.0))
    for point in (inside, inside + 5.0, image.index_to_ras([2.0, 2.0, 2.0]), inside):
        expected = session.would_encode(point)
        assert session.add_point(point).encoder_ran == expected
    assert [session.would_encode(p) for p in (inside, image.index_to_ras([2.0, 2, 2]))] == [
        False,
        False,
    ]


def test_segment_ids_are_not_reused_after_an_undone_new_segment(brats):
    image, labels = brats
    session = Session(image, OraclePredictor(labels))
    session.new_segment()
    session.undo()
    assert session.new_segment().segment_id == 3
    assert [s.segment_id for s in session.segments] == [1, 3]


def painted_with_extras(labels: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object plus a blob next to it (in its crop) and one far away (outside that crop)."""
    truth = labels.array != 0
    near, far = np.zeros_like(truth), np.zeros_like(truth)
    centre = deepest_voxel(truth)
    hi = np.argwhere(truth).max(axis=0)
    near[hi[0] + 2 : hi[0] + 6, centre[1] - 2 : centre[1] + 2, centre[2] - 2 : centre[2] + 2] = True
    far[1:5, 1:5, 1:5] = True
    return truth | near | far, near, far


def test_negative_points_remove_voxels_of_a_painted_segment_inside_their_crop(brats):
    image, labels = brats
    truth = labels.array != 0
    painted, near, far = painted_with_extras(labels)
    session = Session(image, OraclePredictor(labels))
    adopted = session.new_segment("painted", initial_mask=painted)
    assert np.array_equal(adopted.mask, painted)
    blob = image.index_to_ras(np.argwhere(near).mean(axis=0))
    result = session.add_point(blob, positive=False)
    crop = session.current_segment.crops[0].grid
    assert not crop.contains(image.index_to_ras(np.argwhere(far)[0]))
    # The oracle answers with the object: the blob in the crop goes, the far one stays.
    assert not (result.mask.astype(bool) & near).any()
    assert np.array_equal(result.mask.astype(bool), truth | far)
    assert np.array_equal(session.undo().mask.astype(bool), painted)
    session.redo()
    assert not session.reset().mask.any(), "clearing removes the painted voxels too"
    assert np.array_equal(session.undo().mask.astype(bool), truth | far)
    with pytest.raises(ValueError, match="shaped like the volume"):
        session.new_segment(initial_mask=np.ones((3, 3, 3), bool))


class PromptRecorder(CountingPredictor):
    """An oracle that keeps the mask prompt of every decode."""

    def __init__(self, oracle: OraclePredictor) -> None:
        super().__init__(oracle)
        self.prompts: list = []

    def decode(self, embedding, points, labels, mask_input):
        self.prompts.append(None if mask_input is None else np.asarray(mask_input))
        return super().decode(embedding, points, labels, mask_input)


def test_a_painted_segment_is_the_mask_prompt_of_its_new_crops(brats):
    image, labels = brats
    painted, _, _ = painted_with_extras(labels)
    recorder = PromptRecorder(OraclePredictor(labels))
    session = Session(image, recorder)
    inside = image.index_to_ras(deepest_voxel(labels.array != 0))
    session.add_point(inside)
    assert recorder.prompts == [None], "an empty segment starts without a prompt"
    session.new_segment(initial_mask=painted)
    session.add_point(inside)
    prompt = recorder.prompts[-1]
    assert prompt.shape == (32, 32, 32)
    # Each prompt cell is the painted share of its 4³ crop voxels, as logits.
    grid = session.current_segment.crops[0].grid
    cells = np.argwhere(np.abs(prompt) == prompt.max())  # fully inside or fully outside
    for cell in cells[:: max(1, len(cells) // 50)]:
        voxel = np.round(image.ras_to_index(apply_affine(grid.crop_to_ras, 4 * cell + 1.5)))
        voxel = voxel.astype(int)
        inside_volume = image.contains_index(voxel)
        expected = painted[tuple(voxel)] if inside_volume else False
        assert (prompt[tuple(cell)] > 0) == expected


def test_foreign_voxels_stay_out_of_every_segment_unless_overwriting_is_allowed(brats):
    image, labels = brats
    truth = labels.array != 0
    foreign = np.zeros_like(truth)
    foreign[: deepest_voxel(truth)[0]] = True  # half of the object belongs to another tool
    click = deepest_voxel(truth) + [2, 0, 0]
    protected = Session(image, OraclePredictor(labels), foreign_mask=foreign)
    mask = protected.add_point_ijk(click).mask.astype(bool)
    assert np.array_equal(mask, truth & ~foreign)
    free = Session(image, OraclePredictor(labels), protect_other_segments=False)
    free.set_foreign_mask(foreign)
    assert np.array_equal(free.add_point_ijk(click).mask.astype(bool), truth)
    with pytest.raises(ValueError, match="foreign_mask must be shaped"):
        free.set_foreign_mask(foreign[1:])


def test_a_segment_refining_a_foreign_one_may_hold_its_voxels_and_others_may_not(brats):
    image, labels = brats
    truth = labels.array != 0
    click = deepest_voxel(truth)
    session = Session(image, OraclePredictor(labels), foreign_mask=truth)
    session.new_segment("refined", initial_mask=truth)
    assert np.array_equal(session.add_point_ijk(click).mask.astype(bool), truth)
    session.undo()
    session.undo()  # the refinement is undone: the foreign voxels are protected again
    assert not session.add_point_ijk(click).mask.any()
