"""Resampling one voxel grid onto another, both placed in RAS by their affines.

Interpolation is :func:`torch.nn.functional.grid_sample` (trilinear or nearest): one well-tested
kernel that runs on every torch device, so crops and paste-back can run where the model runs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .volume import apply_affine

# Target voxels resampled per grid_sample call: bounds the (N, 3) float grid to about 200 MB.
_CHUNK_VOXELS = 1 << 24


def translation(offset: np.ndarray) -> np.ndarray:
    """4×4 affine that adds ``offset`` (3,)."""
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def source_box(
    source_shape: tuple[int, ...], target_to_source: np.ndarray, target_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The source voxels needed to interpolate every target voxel: ``[lo, hi)`` per axis, clipped.

    Args:
        source_shape: (I, J, K) of the source.
        target_to_source: 4×4 map from target indices to source indices.
        target_shape: shape of the target grid.

    Returns:
        lo, hi: int arrays (3,); empty (lo >= hi on some axis) when the grids do not overlap.
    """
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in target_shape], indexing="ij"))
    mapped = apply_affine(target_to_source, corners.reshape(3, -1).T)
    lo = np.floor(mapped.min(axis=0)).astype(int)
    hi = np.ceil(mapped.max(axis=0)).astype(int) + 1
    return np.clip(lo, 0, source_shape), np.clip(hi, 0, source_shape)


def resample(
    source: np.ndarray | torch.Tensor,
    source_to_ras: np.ndarray,
    target_to_ras: np.ndarray,
    target_shape: tuple[int, int, int],
    *,
    mode: str = "bilinear",
    device: str | torch.device | None = None,
    threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``source`` at the voxel centres of a target grid.

    Voxel edges are at ±0.5 of an index; a target voxel whose centre falls outside the source's
    extent gets 0 and is reported outside. Inside, interpolation clamps at the last voxel centre.
    When the grids' axes are parallel (always the case between a volume and its crops), the
    interpolation is computed separably, one axis at a time, which is exact and much faster.

    Args:
        source: array ``(I, J, K)`` in index order (i, j, k) of ``source_to_ras``.
        source_to_ras: 4×4 map from source indices to RAS mm.
        target_to_ras: 4×4 map from target indices to RAS mm.
        target_shape: (I', J', K') of the target grid.
        mode: ``"bilinear"`` (trilinear) or ``"nearest"``.
        device: where to compute; default the source's device (CPU for NumPy).
        threshold: if given, return ``values > threshold`` (bool) instead of the values; on the
            separable path this is computed slab by slab, without the float32 result in memory.

    Returns:
        values ``(I', J', K')`` float32 (bool with ``threshold``) and inside ``(I', J', K')``
        bool, on ``device``. Where every target voxel is inside, ``inside`` may be a broadcast
        (zero-stride) view of one True.
    """
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"unknown interpolation mode {mode!r}")
    target_to_source = np.linalg.inv(source_to_ras) @ target_to_ras
    source_tensor = torch.as_tensor(source, device=device)
    lo, hi = source_box(tuple(source_tensor.shape), target_to_source, target_shape)
    if np.any(lo >= hi):
        zeros = torch.zeros(target_shape, dtype=torch.float32, device=source_tensor.device)
        return (zeros.bool() if threshold is not None else zeros), zeros.bool()
    box = source_tensor[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].float()
    box_from_target = translation(-lo) @ target_to_source
    source_axes = _parallel_axes(box_from_target[:3, :3])
    if source_axes is not None:
        shapes = (source_tensor.shape, target_shape)
        return _resample_separable(box, box_from_target, source_axes, lo, *shapes, mode, threshold)
    values, inside = _resample_grid(
        box, box_from_target, lo, source_tensor.shape, target_shape, mode
    )
    return (values > threshold if threshold is not None else values), inside


def _parallel_axes(linear: np.ndarray) -> list[int] | None:
    """Source axis of each target axis if the map only permutes, flips and scales axes."""
    significant = np.abs(linear) > 1e-9 * np.abs(linear).max()
    if not np.all(significant.sum(axis=0) == 1) or not np.all(significant.sum(axis=1) == 1):
        return None
    return [int(np.flatnonzero(significant[:, t])[0]) for t in range(3)]


def _axis_weights(
    positions: torch.Tensor, box_size: int, box_start: int, full_size: int, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolation matrix ``(targets, box_size)`` along one axis, and which targets are inside.

    ``positions`` are target voxel centres in box indices.
    """
    full = positions + box_start
    inside = (full >= -0.5) & (full < full_size - 0.5)
    clamped = positions.clamp(0, box_size - 1)
    weights = torch.zeros(len(positions), box_size, dtype=torch.float32, device=positions.device)
    rows = torch.arange(len(positions), device=positions.device)
    if mode == "nearest":
        weights[rows, torch.floor(clamped + 0.5).long().clamp(max=box_size - 1)] = 1.0
    else:
        below = torch.floor(clamped).long().clamp(max=box_size - 1)
        above = (below + 1).clamp(max=box_size - 1)
        fraction = clamped - below
        weights.index_put_((rows, below), 1 - fraction, accumulate=True)
        weights.index_put_((rows, above), fraction, accumulate=True)
    return weights * inside[:, None], inside


def _resample_separable(
    box: torch.Tensor,
    box_from_target: np.ndarray,
    source_axes: list[int],
    lo: np.ndarray,
    full_shape: tuple[int, ...],
    target_shape: tuple[int, int, int],
    mode: str,
    threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    # Reorder the box so that its axis t is the source axis of target axis t.
    values = box.permute(*source_axes)
    weights, insides = [], []
    for t, axis in enumerate(source_axes):
        index = torch.arange(target_shape[t], dtype=torch.float64, device=box.device)
        positions = (index * box_from_target[axis, t] + box_from_target[axis, 3]).float()
        axis_weights, inside = _axis_weights(
            positions, box.shape[axis], int(lo[axis]), full_shape[axis], mode
        )
        weights.append(axis_weights)
        insides.append(inside)
    # Contract the first two axes: (…, source, …) -> (targets, …) each.
    for t in range(2):
        values = torch.movedim(torch.tensordot(weights[t], values, dims=([1], [t])), 0, t)
    # The last axis expands the array most: contract it in slabs along axis 0, so that each
    # slab's result stays in cache and, with a threshold, the float result is never stored whole.
    last = weights[2].T  # (source, targets)
    out = torch.empty(
        target_shape,
        dtype=torch.bool if threshold is not None else torch.float32,
        device=box.device,
    )
    if (
        threshold is None
        or not bool(insides[2].all())
        or not _threshold_sparsely(values, last, threshold, out)
    ):
        slab = max(1, (1 << 20) // max(1, target_shape[1] * target_shape[2]))
        for start in range(0, target_shape[0], slab):
            part = values[start : start + slab] @ last
            if threshold is not None:
                torch.gt(part, threshold, out=out[start : start + slab])
            else:
                out[start : start + slab] = part
    if all(bool(inside.all()) for inside in insides):
        return out, torch.ones((), dtype=torch.bool, device=box.device).expand(target_shape)
    inside = insides[0][:, None, None] & insides[1][None, :, None] & insides[2][None, None, :]
    return out, inside


def _threshold_sparsely(
    values: torch.Tensor, last: torch.Tensor, threshold: float, out: torch.Tensor
) -> bool:
    """``out = (values @ last) > threshold``, computing the product only where it is needed.

    Every column of ``last`` (source, targets) holds non-negative weights summing to 1 (all
    targets inside), so each result is a convex combination of one row of ``values``: a row whose
    values all exceed the threshold gives only True, a row with none above it only False, and
    only the rows that cross the threshold (those near a smooth mask's surface) need the product.

    Returns:
        False, leaving ``out`` alone, when too many rows cross for this to pay off.
    """
    low, high = values.amin(dim=-1), values.amax(dim=-1)
    crossing = (low <= threshold) & (high > threshold)
    rows = crossing.nonzero(as_tuple=True)
    if rows[0].numel() > crossing.numel() // 8:
        return False
    out.copy_((low > threshold)[..., None].expand_as(out))
    if rows[0].numel():
        out[rows] = (values[rows] @ last) > threshold
    return True


def _resample_grid(
    box: torch.Tensor,
    box_from_target: np.ndarray,
    lo: np.ndarray,
    full_shape: tuple[int, ...],
    target_shape: tuple[int, int, int],
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    device = box.device
    values = torch.zeros(target_shape, dtype=torch.float32, device=device)
    inside = torch.zeros(target_shape, dtype=torch.bool, device=device)
    matrix = torch.as_tensor(box_from_target, dtype=torch.float32, device=device)
    box_size = torch.tensor(box.shape, dtype=torch.float32, device=device)
    full_size = torch.tensor(full_shape, dtype=torch.float32, device=device)
    offset = torch.as_tensor(lo, dtype=torch.float32, device=device)
    slab = max(1, _CHUNK_VOXELS // (target_shape[1] * target_shape[2]))
    for start in range(0, target_shape[0], slab):
        stop = min(start + slab, target_shape[0])
        index = _index_grid((stop - start, *target_shape[1:]), start, device)
        in_box = index @ matrix[:3, :3].T + matrix[:3, 3]
        in_source = in_box + offset
        inside[start:stop] = ((in_source >= -0.5) & (in_source < full_size - 0.5)).all(dim=-1)
        # grid_sample wants (x, y, z) = (last, middle, first) axis, normalised to [-1, 1].
        normalised = 2 * in_box / (box_size - 1).clamp(min=1) - 1
        sampled = F.grid_sample(
            box[None, None],
            normalised.flip(-1)[None],
            mode=mode,
            padding_mode="border",
            align_corners=True,
        )
        values[start:stop] = sampled[0, 0]
    return values * inside, inside


def _index_grid(
    shape: tuple[int, int, int], first_offset: int, device: torch.device
) -> torch.Tensor:
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in shape]
    axes[0] = axes[0] + first_offset
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
