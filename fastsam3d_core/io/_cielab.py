"""Colours as DICOM stores them (CIELab, 16 bits each) to and from sRGB in 0..1.

DICOM (PS3.3 C.10.7.1.1) scales L* 0..100 to 0..65535 and a*, b* -128..127 to 0..65535. The
conversion assumes sRGB with the D65 white point, as highdicom and Slicer's DICOM SEG exporter
(dcmqi) do, so a colour comes back from either as it went in. Written here rather than taken from
highdicom because its conversions exist only in versions for Python 3.10 and later.
"""

from __future__ import annotations

import numpy as np

#: Linear sRGB to CIE XYZ (D65), and the D65 white point.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_EPSILON = (6 / 29) ** 3  # where the cube root of CIELab's f becomes its straight part
_UNITS = 65535


def rgb_to_dicom_lab(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    """DICOM's CIELab value (three unsigned 16-bit numbers) of an sRGB colour in 0..1."""
    value = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    linear = np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4)
    xyz = _RGB_TO_XYZ @ linear / _WHITE
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])
    scaled = np.array([lab[0] / 100, (lab[1] + 128) / 255, (lab[2] + 128) / 255]) * _UNITS
    units = np.clip(np.rint(scaled), 0, _UNITS).astype(int)
    return int(units[0]), int(units[1]), int(units[2])


def dicom_lab_to_rgb(value: tuple[int, int, int]) -> tuple[float, float, float]:
    """The sRGB colour in 0..1 (clipped where CIELab leaves sRGB's gamut) of a DICOM CIELab
    value."""
    scaled = np.asarray(value, dtype=np.float64) / _UNITS
    lightness, a_star, b_star = scaled[0] * 100, scaled[1] * 255 - 128, scaled[2] * 255 - 128
    fy = (lightness + 16) / 116
    f = np.array([fy + a_star / 500, fy, fy - b_star / 200])
    xyz = np.where(f**3 > _EPSILON, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    linear = np.clip(np.linalg.solve(_RGB_TO_XYZ, xyz), 0.0, 1.0)
    rgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    red, green, blue = (float(np.clip(channel, 0.0, 1.0)) for channel in rgb)
    return red, green, blue
