"""The MONAI Label app's request handling, without MONAI Label: points, sessions, label files.

The requests run on the example CT with the seeded FastSAM3D and are compared with the core's own
:class:`Session` given the same clicks (the server must not segment differently from the engine).
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import nrrd
import numpy as np
import pytest
from conftest import session_mask

from fastsam3d_core.examples import example_ct_path
from fastsam3d_core.io import read_volume
from fastsam3d_monailabel.label_files import (
    LabelFormat,
    OutputFolder,
    label_format,
    write_label,
)
from fastsam3d_monailabel.points import MAX_POINTS, RequestPoints, request_points
from fastsam3d_monailabel.sessions import MAX_LABELS, ImageSessions
from fastsam3d_monailabel.settings import AppSettings

# Voxel indices (i, j, k) of the example CT, (I, J, K) = (122, 101, 30): in the spleen
# (its deepest voxel), beside it, and far from it (another crop).
SPLEEN = (22.0, 33.0, 22.0)
BESIDE = (25.0, 36.0, 22.0)
OUTSIDE_SPLEEN = (30.0, 30.0, 20.0)
FAR = (90.0, 50.0, 25.0)


@pytest.fixture(scope="module")
def ct_path() -> Path:
    return example_ct_path()


@pytest.fixture(scope="module")
def ct(ct_path: Path):
    return read_volume(ct_path)


def test_a_continued_request_runs_only_its_new_point_and_matches_the_engine(
    ct_path: Path, ct, fastsam3d_seeded
) -> None:
    sessions = ImageSessions(fastsam3d_seeded)
    first = sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN,), ()))
    assert (first.decoded, first.encoder_runs, first.restarted) == (1, 1, False)
    assert first.mask.any()
    assert np.array_equal(first.mask, session_mask(ct, fastsam3d_seeded, [(SPLEEN, True)]))

    second = sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN, BESIDE), ()))
    assert (second.decoded, second.encoder_runs, second.restarted) == (1, 0, False)
    third = sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN, BESIDE), (OUTSIDE_SPLEEN,)))
    assert (third.decoded, third.encoder_runs, third.restarted) == (1, 0, False)
    clicks = [(SPLEEN, True), (BESIDE, True), (OUTSIDE_SPLEEN, False)]
    assert np.array_equal(third.mask, session_mask(ct, fastsam3d_seeded, clicks))

    again = sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN, BESIDE), (OUTSIDE_SPLEEN,)))
    assert (again.decoded, again.restarted) == (0, False)
    assert np.array_equal(again.mask, third.mask)


def test_a_request_that_is_no_continuation_starts_the_label_again(
    ct_path: Path, ct, fastsam3d_seeded
) -> None:
    sessions = ImageSessions(fastsam3d_seeded)
    sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN, BESIDE), ()))
    removed = sessions.segment(ct_path, "spleen", RequestPoints((BESIDE,), ()))
    assert (removed.decoded, removed.restarted) == (1, True)
    assert np.array_equal(removed.mask, session_mask(ct, fastsam3d_seeded, [(BESIDE, True)]))
    # Slicer's module asks for a fresh start (reset_state) after a change of label or image.
    reset = sessions.segment(ct_path, "spleen", RequestPoints((BESIDE,), ()), restart=True)
    assert (reset.decoded, reset.restarted) == (1, True)
    assert np.array_equal(reset.mask, removed.mask)


def test_labels_are_independent_and_share_the_images_embeddings(
    ct_path: Path, ct, fastsam3d_seeded
) -> None:
    sessions = ImageSessions(fastsam3d_seeded)
    spleen = sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN,), ()))
    # A second label at the same place (a tumour inside an organ) is not cut by the first...
    inside = sessions.segment(ct_path, "tumor", RequestPoints((SPLEEN,), ()))
    assert (inside.decoded, inside.encoder_runs) == (1, 0)  # ...and its crop is encoded once
    assert np.array_equal(inside.mask, spleen.mask) and len(sessions) == 1
    other = sessions.segment(ct_path, "other", RequestPoints((FAR,), ()))
    assert np.array_equal(other.mask, session_mask(ct, fastsam3d_seeded, [(FAR, True)]))
    spleen_again = sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN,), ()))
    assert spleen_again.decoded == 0
    assert np.array_equal(spleen_again.mask, spleen.mask)


def test_a_point_outside_the_image_is_refused_and_changes_nothing(
    ct_path: Path, ct, fastsam3d_seeded
) -> None:
    sessions = ImageSessions(fastsam3d_seeded)
    before = sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN,), ()))
    outside = (float(ct.shape[0]), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"outside the image, whose voxel indices \(i, j, k\) run"):
        sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN, outside), ()))
    after = sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN,), ()))
    assert after.decoded == 0 and np.array_equal(after.mask, before.mask)


def test_labels_per_image_are_bounded(ct_path: Path, fastsam3d_seeded) -> None:
    sessions = ImageSessions(fastsam3d_seeded)
    for number in range(MAX_LABELS):
        sessions.segment(ct_path, f"label {number}", RequestPoints((SPLEEN,), ()))
    with pytest.raises(ValueError, match=f"already has {MAX_LABELS} labels"):
        sessions.segment(ct_path, "one more", RequestPoints((SPLEEN,), ()))
    with pytest.raises(ValueError, match="at most 64 characters"):
        sessions.segment(ct_path, "x" * 65, RequestPoints((SPLEEN,), ()))
    assert sessions.segment(ct_path, "label 0", RequestPoints((SPLEEN,), ())).decoded == 0


def test_sessions_are_bounded_and_expire(ct_path: Path, tmp_path: Path, fastsam3d_seeded) -> None:
    copy = tmp_path / "copy.nii.gz"
    copy.write_bytes(ct_path.read_bytes())
    now = [0.0]
    sessions = ImageSessions(fastsam3d_seeded, max_images=1, idle_minutes=1, clock=lambda: now[0])
    sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN,), ()))
    sessions.segment(copy, "spleen", RequestPoints((SPLEEN,), ()))
    assert len(sessions) == 1
    back = sessions.segment(ct_path, "spleen", RequestPoints((SPLEEN, BESIDE), ()))
    assert back.decoded == 2  # its session had gone: every point runs again
    now[0] = 61.0
    assert sessions.expire() == 1 and len(sessions) == 0


def test_request_points_are_checked_in_one_line() -> None:
    points = request_points({"foreground": [[1, 2, 3]], "background": [[4.0, 5, 6]]})
    assert points == RequestPoints(((1.0, 2.0, 3.0),), ((4.0, 5.0, 6.0),))
    for params, message in [
        ({}, "no points"),
        ({"foreground": [], "background": []}, "no points"),
        ({"foreground": "1,2,3"}, "must be a list of voxel indices"),
        ({"foreground": [[1, 2]]}, r"voxel index \[i, j, k\] of three finite numbers"),
        ({"foreground": [[1, 2, math.nan]]}, "three finite numbers"),
        ({"foreground": [[True, 2, 3]]}, "three finite numbers"),
        ({"background": [["1", 2, 3]]}, "'background' point"),
        ({"foreground": [[1, 2, 3]] * (MAX_POINTS + 1)}, f"at most {MAX_POINTS}"),
    ]:
        with pytest.raises(ValueError, match=message) as error:
            request_points(params)
        assert "\n" not in str(error.value)


def test_the_label_is_written_as_the_client_asks(ct, tmp_path: Path) -> None:
    mask = np.zeros(ct.shape, np.uint8)
    mask[10:20, 30:35, 5:9] = 1
    assert label_format({}) == LabelFormat(".nii.gz", "uint8", True)
    ohif = label_format(
        {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False}
    )
    folder = OutputFolder(keep=2)
    path = write_label(mask, ct, ohif, folder)
    array, header = nrrd.read(str(path))
    assert header["encoding"] == "raw" and array.dtype == np.uint8
    # OHIF copies the voxels in file order into its labelmap: i fastest, as the image.
    assert np.array_equal(array, mask)
    assert not path.read_bytes().startswith(gzip.compress(b"")[:2])
    nifti = write_label(mask, ct, label_format({"result_extension": "nii.gz"}), folder)
    read = read_volume(nifti)
    assert np.array_equal(read.array, mask)
    assert np.allclose(read.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)
    # Only the newest files stay: they hold patient data.
    third = write_label(mask, ct, ohif, folder)
    assert sorted(folder.path.iterdir()) == sorted([nifti, third])
    for params in ({"result_extension": ".png"}, {"result_dtype": "complex64"}):
        with pytest.raises(ValueError, match="is not written; choose"):
            label_format(params)


def test_settings_round_trip_through_monai_labels_conf_pairs() -> None:
    settings = AppSettings(
        models=("fastsam3d", "sam-med3d-turbo"),
        weights=(("fastsam3d", "/w/a.pth"),),
        adapters=(("sam-med3d-turbo", "/w/b.pt"),),
        precision="auto",
        labels=("liver", "urinary bladder"),
        max_images=2,
        idle_minutes=5.5,
    )
    assert AppSettings.from_conf(dict(settings.conf_pairs())) == settings
    one = AppSettings.from_conf({"weights": "/w/x.pth"})
    assert one.weights_of("fastsam3d") == "/w/x.pth" and one.adapter_of("fastsam3d") is None
    with pytest.raises(ValueError, match="unknown model"):
        AppSettings.from_conf({"models": "fastsam3d,sam2"})
    with pytest.raises(ValueError, match="--conf sessions must be a number"):
        AppSettings.from_conf({"sessions": "many"})


def test_the_tests_install_what_the_monailabel_extra_installs() -> None:
    """The server tests run on the test extra: it must hold the ``monailabel`` extra (which the
    docs tell departments to install), so that CI tests what they get."""
    tomllib = pytest.importorskip("tomllib")
    repo = Path(__file__).resolve().parents[1]
    with open(repo / "pyproject.toml", "rb") as file:
        extras = tomllib.load(file)["project"]["optional-dependencies"]
    assert extras["monailabel"] and set(extras["monailabel"]) <= set(extras["test"])
    from fastsam3d_monailabel.launch import NO_DEPS_REQUIREMENTS, install_hint

    docs = (repo / "docs" / "monailabel.md").read_text(encoding="utf-8")
    assert install_hint() in docs
    assert all(requirement in install_hint() for requirement in NO_DEPS_REQUIREMENTS)
