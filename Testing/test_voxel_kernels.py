"""The compiled voxel loops (fastsam3d_core/geometry/_voxels.c) give NumPy's bytes exactly:
odd row lengths (a packed byte cut short, rows shorter than one vector), boxes of larger
arrays (strided), values other than 0 and 1, and every layout the paste-back hands them.

Where a C compiler and Python's headers are present (CI, this machine) the loops must have
been built: an installation that silently fell back to NumPy would be 2-3 times slower per
click on a large CT without any test noticing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
    box = (slice(1, 8), slice(2, 10), slice(3, 3 + length))  # strided rows of a larger array
    # Nonzero is one, as np.packbits takes it (0x80 and 0x7f: the word trick's edge cases); in a
    # row that changes, which both copy (bytes other than 0/1 in a row that packs alike may
    # stay: the compiled loops copy by row, NumPy by slab).
    odd = np.array([2, 255, 128, 127], np.uint8)[: min(4, length)]
    mask[2, 3, 3 : 3 + odd.size] = odd
    new = rng.integers(0, 2, (7, 8, length)).astype(np.uint8)
    new[1, 1, 0] = 0  # region[1, 1, 0] is 2: packed, it changes
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
    below = rng.normal(size=(13, length)).astype(np.float32)
    # Above at a random multiple of -below away: the interpolation crosses 0 at a random
    # fraction in (0, 1) (ties are in the next test).
    above = (below - below / rng.uniform(0, 1, size=below.shape)).astype(np.float32)
    below[0, 0], above[1, 0] = np.float32(-0.0), below[1, 0]
    fractions = np.concatenate([[0, 1 - 2**-24], rng.uniform(0, 1, 6)]).astype(np.float32)
    whole = np.zeros((8, 15, length + 4), bool)
    (compiled, numpy) = both(
        lambda out, *rest: signs_between(*rest, out[:, 1:14, 2 : 2 + length]) or out,
        whole, below, above, fractions,
    )  # fmt: skip
    np.testing.assert_array_equal(compiled[1], numpy[1])
    plain = fractions[:, None, None] * (above - below)[None] > -below[None]
    np.testing.assert_array_equal(compiled[1][:, 1:14, 2 : 2 + length], plain)
    assert not compiled[1][:, 0].any() and not compiled[1][:, :, :2].any()


@pytest.mark.skipif(not BUILT, reason="the compiled loops are not built here")
def test_signs_between_rounds_as_float32_at_ties():
    """Planes built so that f·(above − below) lands within a few float32 steps of −below (the
    interpolation's sign decided by rounding), and special values: the loops round the
    difference and the product to float32 and compare, as NumPy does; a fused multiply-add or
    wider intermediates would flip some of these voxels (checked: float64 flips some)."""
    rng = np.random.default_rng(7)
    fractions = np.array([0.1, 0.25, 1 / 3, 0.7, 0.9], np.float32)
    below = rng.normal(size=(len(fractions), 4096)).astype(np.float32)
    # above = below + s with f·s ≈ −below: s one to three float32 steps either side of −below/f.
    steps = rng.integers(-3, 4, size=below.shape).astype(np.float32)
    tie = (-below / fractions[:, None]).astype(np.float32)
    above = (below + tie + steps * np.spacing(tie)).astype(np.float32)
    below, above = below.reshape(-1), above.reshape(-1)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3e38, -3e38])
    below = np.concatenate([below, np.repeat(specials, 9)]).astype(np.float32)[None]
    above = np.concatenate([above, np.tile(specials, 9)]).astype(np.float32)[None]
    with np.errstate(all="ignore"):
        plain = fractions[:, None, None] * (above - below)[None] > -below[None]
        wide = (
            fractions.astype(np.float64)[:, None, None] * (above.astype(np.float64) - below)[None]
            > -below.astype(np.float64)[None]
        )
        (compiled, numpy) = both(
            lambda out, *rest: signs_between(*rest, out) or out,
            np.zeros(plain.shape, bool), below, above, fractions,
        )  # fmt: skip
    assert (wide != plain).any()  # the data tells float32 from wider arithmetic
    np.testing.assert_array_equal(compiled[1], plain)
    np.testing.assert_array_equal(numpy[1], plain)


@pytest.mark.skipif(not BUILT, reason="the compiled loops are not built here")
@pytest.mark.parametrize("length", [3, 8, 32, 61, 256])
def test_packing_takes_every_nonzero_byte_as_one(length):
    rng = np.random.default_rng(length)
    source = np.resize(np.arange(256, dtype=np.uint8), (2, 3, length))
    source[:, 1] = rng.permutation(source[:, 1], axis=-1)
    source[1, 2] = 0
    out = np.full((2, 3, -(-length // 8)), 0xA5, np.uint8)  # every byte written
    voxel_kernels._voxels.pack_rows(source, out)
    np.testing.assert_array_equal(out, np.packbits(source != 0, axis=-1))


@pytest.mark.skipif(not BUILT, reason="the compiled loops are not built here")
def test_flipped_and_broadcast_views_take_the_compiled_loops_and_equal_numpys():
    """Negative strides on the first two axes (a flipped volume's box) and zero strides (a
    broadcast, read-only ``new``) are walked by the compiled loops as NumPy walks them."""
    rng = np.random.default_rng(5)
    flip = (slice(None, None, -1), slice(None, None, -2))
    new = np.broadcast_to(rng.integers(0, 2, (1, 5, 37), dtype=np.uint8), (6, 5, 37))
    assert voxel_kernels._rows_contiguous(new, np.empty((6, 10, 37), np.uint8)[flip])
    (compiled, numpy) = both(
        lambda mask, *rest: (mask, write_rows(mask[flip], *rest)),
        rng.integers(0, 2, (6, 10, 37), dtype=np.uint8), new,
        np.zeros((6, 5, 5), np.uint8), np.zeros((6, 5, 5), np.uint8)[::-1], np.zeros(6, bool),
    )  # fmt: skip
    for ours, theirs in zip(compiled[0], numpy[0]):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(compiled[1][1], numpy[1][1])
    np.testing.assert_array_equal(compiled[0][0][flip], new)

    below = rng.normal(size=(9, 21)).astype(np.float32)[::-1, :]
    above = rng.normal(size=(9, 21)).astype(np.float32)[:, :]
    fractions = np.array([0.25, 0.5, 0.75], np.float32)
    (compiled, numpy) = both(
        lambda out, *rest: signs_between(*rest, out[::-1, ::-1]) or out,
        np.zeros((3, 9, 21), bool), below, above, fractions,
    )  # fmt: skip
    np.testing.assert_array_equal(compiled[1], numpy[1])
    plain = fractions[:, None, None] * (above - below)[None] > -below[None]
    np.testing.assert_array_equal(compiled[1][::-1, ::-1], plain)


def test_unaligned_or_reversed_rows_are_computed_by_numpy():
    """Rows the C loops cannot read as they are (reversed; floats at an odd address) go to
    NumPy, with the same result."""
    raw = np.zeros(4 * 5 * 16 + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, np.float32, 5 * 16, offset=1).reshape(5, 16)
    assert not voxel_kernels._rows_contiguous(unaligned)
    reversed_rows = (np.arange(80, dtype=np.float32) - 40).reshape(5, 16)[:, ::-1]
    assert not voxel_kernels._rows_contiguous(reversed_rows)
    out = np.zeros((1, 5, 16), bool)
    signs_between(unaligned, reversed_rows, np.ones(1, np.float32), out)
    np.testing.assert_array_equal(out[0], reversed_rows > 0)


@pytest.mark.skipif(not BUILT, reason="the compiled loops are not built here")
@pytest.mark.parametrize("value,compiled", [("1", False), ("yes", False), ("0", True), ("", True)])
def test_the_environment_variable_turns_the_compiled_loops_off(value, compiled):
    script = "from fastsam3d_core.geometry import voxel_kernels as v; print(v.compiled_loops())"
    environment = {**os.environ, "FASTSAM3D_NO_COMPILED_LOOPS": value}
    run = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert (run.stdout.strip() != "None") == compiled, run.stdout
