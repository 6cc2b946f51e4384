"""Crops tiled over a whole volume: where a text prompt (no click to say where) is looked for."""

from __future__ import annotations

import math

import numpy as np

from .crop import CROP_SIZE, CropGrid, _volume_extent_in_crop, crop_grid_around
from .volume import Volume, apply_affine


def text_tiles(volume: Volume, size: int = CROP_SIZE) -> list[CropGrid]:
    """The fewest crops (each as :func:`crop_grid_around` places one: canonical axes, 1.5 mm,
    inside the volume where it is longer than a crop) that cover the whole volume.

    Along each crop axis the volume's extent L (in crop voxels) takes ⌈L / size⌉ crops, spread
    evenly from one end to the other (overlapping where L is not a multiple of ``size``).

    Returns:
        Crop grids in C order of their (d0, d1, d2) positions; one for a volume that fits.
    """
    centre = apply_affine(volume.ijk_to_ras, (np.array(volume.shape) - 1) / 2)
    middle = crop_grid_around(volume, centre, size)
    lo, hi = _volume_extent_in_crop(volume, middle)
    starts = []
    for low, high in zip(lo, hi):
        length = high - low
        count = max(1, math.ceil(length / size - 1e-6))
        if count == 1:
            starts.append([(low + high) / 2 - size / 2])
        else:
            step = (length - size) / (count - 1)
            starts.append([low + n * step for n in range(count)])
    grids = []
    for a in starts[0]:
        for b in starts[1]:
            for c in starts[2]:
                # Crop index of this tile's centre on the middle crop's lattice, in RAS.
                index = np.array([a, b, c]) + size / 2 - 0.5
                grids.append(
                    crop_grid_around(volume, apply_affine(middle.crop_to_ras, index), size)
                )
    return grids
