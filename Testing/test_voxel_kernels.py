"""The compiled voxel loops (fastsam3d_core/geometry/_voxels.c) give NumPy's bytes exactly:
odd row lengths (a packed byte cut short, rows shorter than one vector), boxes of larger
arrays (strided), values other than 0 and 1, and every layout the paste-back hands them.

Where a C compiler and Python's headers are present (CI, this machine) the loops must have
been built: an installation that silently fell back to NumPy would be 2-3 times slower per
click on a large CT without any test noticing.
"""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from fastsam3d_core.geometry import voxel_kernels
from fastsam3d_core.geometry.voxel_kernels import set_compiled, signs_between, write_rows

BUILT = voxel_kernels._voxels is not None


def test_the_loops_are_built_where_a_compiler_is():
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not (shutil.which("cc") or shutil.which("gcc")) or not headers.is_file():
        pytest.skip("no C compiler or Python headers here: NumPy computes the loops")
    assert voxel_kernels.compiled_loops() in ("avx2", "scalar"), "run: pip install -e ."


@pytest.fixture(params=["avx2", "scalar"], autouse=True)
def instruction_set(request):
    """Each test with the AVX2 loops (where the CPU has AVX2) and the scalar ones (the path of
    other CPUs, e.g. ARM)."""
    if not BUILT:
        yield None
        return
    try:
        voxel_kernels._voxels.use_instruction_set(request.param)
    except ValueError:
        pytest.skip(f"no {request.param} loops on this CPU")
    yield request.param
    try:  # back to the import's choice
        voxel_kernels._voxels.use_instruction_set("avx2")
    except ValueError:
        pass  # the scalar loops were in use


def both(function, *arrays, **keywords):
    """``function`` on copies of ``arrays`` with the compiled loops and with NumPy: the
    copies (written in place) and the results of each."""
    runs = []
    for compiled in (True, False):
        previous = set_compiled(compiled)
        try:
            copies = [a.copy() if isinstance(a, np.ndarray) else a for a in arrays]
            runs.append((copies, function(*copies, **keywords)))
        finally:
            set_compiled(previous)
    return runs


@pytest.mark.skipif(not BUILT, reason="the compiled loops are not built here")
@pytest.mark.parametrize("length", [1, 7, 8, 9, 31, 32, 33, 63, 65, 274])
def test_a_write_packs_compares_and_copies_as_numpy(length):
    rng = np.random.default_rng(length)
    mask = rng.integers(0, 2, (9, 11, length + 6)).astype(np.uint8)
    mask[0, 0, :3] = (2, 255, 7)  # nonzero is one, as np.packbits takes it
    box = (slice(1, 8), slice(2, 10), slice(3, 3 + length))  # strided rows of a larger array
    new = rng.integers(0, 2, (7, 8, length)).astype(np.uint8)
    new[3] = mask[box][3]  # a row of the first axis that does not change
    packed = (7, 8, -(-length // 8))
    (compiled, numpy) = both(
        lambda region, *rest: (region, write_rows(region[box], *rest)),
        mask, new, np.zeros(packed, np.uint8), np.zeros(packed, np.uint8), np.zeros(7, bool),
    )  # fmt: skip
    for ours, theirs in zip(compiled[0], numpy[0]):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(compiled[1][1], numpy[1][1])
    before_bits, after_bits, rows_differ = compiled[0][2:]
    np.testing.assert_array_equal(before_bits, np.packbits(mask[box], axis=-1))
    np.testing.assert_array_equal(after_bits, np.packbits(new, axis=-1))
    assert not rows_differ[3] and rows_differ.sum() == 6
    np.testing.assert_array_equal(compiled[0][0][box], new)


@pytest.mark.skipif(not BUILT, reason="the compiled loops are not built here")
@pytest.mark.parametrize("length", [1, 5, 16, 17, 40, 274])
def test_signs_between_planes_equal_numpys(length):
    rng = np.random.default_rng(length)
    step = rng.normal(size=(13, length)).astype(np.float32)
    negated = (step * rng.uniform(0, 1, size=step.shape)).astype(np.float32)  # near the edge
    negated[0, 0] = np.float32(-0.0)
    fractions = np.concatenate([[0, 1 - 2**-24], rng.uniform(0, 1, 6)]).astype(np.float32)
    whole = np.zeros((8, 15, length + 4), bool)
    (compiled, numpy) = both(
        lambda out, *rest: signs_between(*rest, out[:, 1:14, 2 : 2 + length]) or out,
        whole, step, negated, fractions,
    )  # fmt: skip
    np.testing.assert_array_equal(compiled[1], numpy[1])
    plain = fractions[:, None, None] * step[None] > negated[None]
    np.testing.assert_array_equal(compiled[1][:, 1:14, 2 : 2 + length], plain)
    assert not compiled[1][:, 0].any() and not compiled[1][:, :, :2].any()
