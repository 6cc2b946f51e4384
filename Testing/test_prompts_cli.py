"""``fastsam3d segment`` with boxes, scribbles and lassos, on the real 3 mm CT with the seeded
model: what the flags write, and the one line each bad drawing gets before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN_DIR, SHARED_DATA_DIR, invoke_cli

from fastsam3d_core.io import read_segmentation, read_volume

CT = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_3mm.nii.gz"

pytestmark = pytest.mark.skipif(
    not (CT.is_file() and GOLDEN_DIR.is_dir()), reason="shared test data not available"
)

# Volume indices (i, j, k) on the CT (122 x 101 x 30 voxels of 3 mm): a box around the spleen,
# the spleen's point, and a pentagon on slice k = 20 inside the box (vertices off the voxel
# centres, so that no centre lies on an edge).
BOX_IJK = ((12, 24, 14), (40, 55, 28))
SPLEEN_IJK = (22, 33, 22)
LASSO_SLICE = 20
LASSO_IJ = [(18.3, 28.2), (33.7, 30.1), (36.2, 45.6), (24.1, 50.3), (16.6, 40.2)]


@pytest.fixture(scope="module")
def ct():
    return read_volume(CT)


def ras_text(ct, *ijk) -> str:
    """Volume indices as the command line's R,A,S (several: joined by ':', as --box takes)."""
    points = ct.index_to_ras(np.asarray(ijk, dtype=float))
    return ":".join(",".join(f"{value:.6f}" for value in point) for point in points)


def write_curve(path: Path, kind: str, points_ras, system: str = "LPS") -> Path:
    """A Slicer markups file with one node of ``kind`` (``Curve``, ``ClosedCurve``,
    ``Fiducial``), its control points written in ``system`` as Slicer writes them."""
    flip = np.array([-1.0, -1.0, 1.0]) if system == "LPS" else np.ones(3)
    controls = [
        {"id": str(n), "position": (np.asarray(p) * flip).tolist(), "positionStatus": "defined"}
        for n, p in enumerate(points_ras, 1)
    ]
    node = {"type": kind, "coordinateSystem": system, "controlPoints": controls}
    path.write_text(json.dumps({"@schema": "markups-schema-v1.0.3", "markups": [node]}))
    return path


def lasso_ras(ct, ij=LASSO_IJ, k=LASSO_SLICE) -> np.ndarray:
    return ct.index_to_ras(np.array([(i, j, k) for i, j in ij], dtype=float))


def filled_contour(ct, ij=LASSO_IJ) -> np.ndarray:
    """The slice's voxels whose centres the polygon encloses, bool (I, J), by matplotlib."""
    from matplotlib.path import Path as Polygon

    i, j = np.meshgrid(np.arange(ct.shape[0]), np.arange(ct.shape[1]), indexing="ij")
    inside = Polygon(ij).contains_points(np.stack([i.ravel(), j.ravel()], axis=1))
    return inside.reshape(i.shape)


def segment(ct, seeded_checkpoint, output: Path, *arguments) -> tuple:
    """Run ``fastsam3d segment`` on the CT; its result and the written segment's mask."""
    result = invoke_cli(
        [
            "segment",
            CT,
            *arguments,
            "--weights",
            seeded_checkpoint,
            "--device",
            "cpu",
            "--precision",
            "float32",
            "-o",
            output,
        ]
    )
    assert result.exit_code == 0, result.output
    segments, geometry = read_segmentation(output)
    np.testing.assert_allclose(geometry.ijk_to_ras, ct.ijk_to_ras, atol=1e-6)
    return result, segments[0].mask.astype(bool)


def test_a_box_a_lasso_a_scribble_and_a_point_write_a_segmentation(ct, seeded_checkpoint, tmp_path):
    lasso = write_curve(tmp_path / "outline.mrk.json", "ClosedCurve", lasso_ras(ct))
    stroke = ct.index_to_ras(np.array([[20.0, 35.0, 17.0], [30.0, 40.0, 17.0], [35.0, 45.0, 16.0]]))
    scribble = write_curve(tmp_path / "stroke.mrk.json", "Curve", stroke, system="RAS")
    output = tmp_path / "spleen.seg.nrrd"
    result, mask = segment(
        ct,
        seeded_checkpoint,
        output,
        "--point",
        ras_text(ct, SPLEEN_IJK),
        "--scribble",
        scribble,
        "--lasso",
        lasso,
        "--box",
        ras_text(ct, *BOX_IJK),
    )
    # The fixed order: boxes, lassos, scribbles, points.
    lines = [line.split(" (")[0] for line in result.stdout.splitlines()]
    assert [line for line in lines if "/4 " in line] == [
        "box 1/4 +",
        "lasso 2/4 +",
        "scribble 3/4 +",
        "point 4/4 +",
    ]
    assert mask.sum() > 0
    lo, hi = np.array(BOX_IJK[0]), np.array(BOX_IJK[1]) + 1
    outside = mask.copy()
    outside[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = False
    assert not outside.any(), f"{int(outside.sum())} voxels outside the box"
    expected = filled_contour(ct)
    assert expected.sum() > 100
    np.testing.assert_array_equal(mask[:, :, LASSO_SLICE], expected)


def test_negative_box_and_lasso_clear_what_they_hold(ct, seeded_checkpoint, tmp_path):
    # A negative box over the top of the point's object, a negative lasso on a slice below the
    # point: what the point alone segments there, they clear.
    around = [(15.2, 25.3), (30.8, 26.1), (31.4, 41.7), (14.6, 40.9)]
    cut_slice = 18
    lasso = write_curve(tmp_path / "cut.mrk.json", "ClosedCurve", lasso_ras(ct, around, cut_slice))
    box = (slice(10, 46), slice(20, 61), slice(25, 30))
    negative_box = ras_text(ct, (10, 20, 25), (45, 60, 29)) + ":neg"
    point = ras_text(ct, SPLEEN_IJK)
    _, alone = segment(ct, seeded_checkpoint, tmp_path / "point.seg.nrrd", "--point", point)
    cut_fill = filled_contour(ct, around)
    assert alone[box].any() and alone[:, :, cut_slice][cut_fill].any()
    result, mask = segment(
        ct,
        seeded_checkpoint,
        tmp_path / "cut.seg.nrrd",
        "--point",
        point,
        "--negative-lasso",
        lasso,
        "--box",
        negative_box,
    )
    assert "box 1/3 -" in result.stdout and "lasso 2/3 -" in result.stdout
    assert mask.sum() > 0
    assert not mask[box].any()
    assert not mask[:, :, cut_slice][cut_fill].any()


def bowtie(ct) -> np.ndarray:
    return lasso_ras(ct, [(20.3, 30.2), (35.1, 45.3), (35.4, 30.6), (20.2, 45.1)])


def tilted(ct) -> np.ndarray:
    points = lasso_ras(ct)
    points[2] = ct.index_to_ras(np.array([36.2, 45.6, LASSO_SLICE + 4.0]))
    return points


# Each bad input: the option and file or value it names, and what the line says.
BAD_INPUTS = {
    "box of zero size": (
        ["--box", lambda ct, d: ras_text(ct, (20, 30, 20), (20, 30, 20))],
        "no size along 3 axes",
    ),
    "box outside": (["--box", lambda ct, d: "5000,0,0:5010,10,10"], "outside the volume"),
    "malformed box": (["--box", lambda ct, d: "1,2,3"], "R,A,S:R,A,S"),
    "box with a bad suffix": (["--box", lambda ct, d: "1,2,3:4,5,6:negative"], "':neg'"),
    "scribble of one point": (
        ["--scribble", lambda ct, d: write_curve(d / "dot.mrk.json", "Curve", lasso_ras(ct)[:1])],
        "at least two distinct points",
    ),
    "self-intersecting lasso": (
        ["--lasso", lambda ct, d: write_curve(d / "bowtie.mrk.json", "ClosedCurve", bowtie(ct))],
        "crosses itself",
    ),
    "non-planar lasso": (
        ["--lasso", lambda ct, d: write_curve(d / "tilted.mrk.json", "ClosedCurve", tilted(ct))],
        "not drawn on one slice",
    ),
    "point list as lasso": (
        ["--lasso", lambda ct, d: write_curve(d / "p.mrk.json", "Fiducial", lasso_ras(ct))],
        "is a point list (markups type 'Fiducial'), not a closed curve",
    ),
    "closed curve as scribble": (
        [
            "--negative-scribble",
            lambda ct, d: write_curve(d / "c.mrk.json", "ClosedCurve", lasso_ras(ct)),
        ],
        "give closed curves to --lasso",
    ),
    "missing file": (["--lasso", lambda ct, d: d / "none.mrk.json"], "markups file not found"),
    "not JSON": (
        ["--scribble", lambda ct, d: (d / "x.mrk.json", (d / "x.mrk.json").write_text("{"))[0]],
        "not valid JSON",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_drawings_get_one_line_before_the_model_loads(case, ct, tmp_path):
    (option, make), says = BAD_INPUTS[case]
    value = make(ct, tmp_path)
    output = tmp_path / "out.seg.nrrd"
    # Weights that do not exist: the drawing is refused before anything opens them.
    result = invoke_cli(
        [
            "segment",
            CT,
            "--point",
            ras_text(ct, SPLEEN_IJK),
            option,
            value,
            "--weights",
            tmp_path / "no.pth",
            "--device",
            "cpu",
            "-o",
            output,
        ]
    )
    lines = result.stderr.strip().splitlines()
    assert result.exit_code in (1, 2) and len(lines) == 1, result.output
    line = " ".join(lines[0].split())
    assert line.startswith("error: ") and says in line, line
    assert option in line and str(value) in line, line
    assert "no.pth" not in line and "loading" not in result.stdout
    assert list(tmp_path.glob("out*")) == []
