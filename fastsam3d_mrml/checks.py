"""Scenarios shared by the module's Slicer self-test and the pytest suite (no Qt).

Each builds real MRML nodes in the given scene, drives
:class:`~fastsam3d_mrml.logic.InteractiveSegmentationLogic` as a user would (points in the
markups nodes, then synchronize), and returns measurements; the callers assert on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import vtk

from . import mrml_io

TIMEOUT_S = 300.0
# A sphere of this radius (mm), bright on a darker background, is the synthetic object.
SPHERE_RADIUS_MM = 15.0


@dataclass
class CheckResult:
    """What a scenario measured.

    Attributes:
        dice: overlap of the segment (as Slicer exports it on the volume grid) with the truth.
        mismatched_voxels: voxels where the segment differs from a core Session given the same
            clicks directly (0: the MRML round trip loses nothing).
        round_trip_mm: largest RAS -> IJK -> RAS error over the volume corners, in mm.
        encodes: how often the image encoder ran, per click, in click order.
        errors: errors the logic reported.
    """

    dice: float
    mismatched_voxels: int
    round_trip_mm: float
    encodes: list[bool]
    errors: list[str]


def oblique_affine(shape, spacing_mm=(1.2, 1.0, 1.5)) -> np.ndarray:
    """An ijk-to-RAS with rotated, permuted axes, centred near the origin."""
    a, b = np.deg2rad(25.0), np.deg2rad(-15.0)
    turn_s = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    turn_r = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    permute = np.eye(3)[:, [1, 2, 0]]
    affine = np.eye(4)
    affine[:3, :3] = turn_s @ turn_r @ permute @ np.diag(spacing_mm)
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return affine


def sphere_volumes(shape=(60, 52, 44), seed: int = 0):
    """A noisy bright sphere on an oblique grid: (image, mask) as core Volumes."""
    from fastsam3d_core import Volume

    affine = oblique_affine(shape)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    centre_ras = np.array([4.0, -3.0, 2.0])
    distance = np.linalg.norm(ijk @ affine[:3, :3].T + affine[:3, 3] - centre_ras, axis=-1)
    mask = (distance <= SPHERE_RADIUS_MM).astype(np.uint8)
    rng = np.random.default_rng(seed)
    image = (200.0 * mask + 40.0 + rng.normal(0, 10, shape)).astype(np.float32)
    return Volume(image, affine), Volume(mask, affine), centre_ras


def add_volume_node(scene, volume, name: str):
    """A scalar volume node holding a core volume (voxels and affine)."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    node.SetIJKToRASMatrix(mrml_io.array_to_matrix(volume.ijk_to_ras))
    node.CreateDefaultDisplayNodes()
    return node


def round_trip_error_mm(volume_node) -> float:
    """Largest RAS -> IJK -> RAS error at the volume's corners (world coordinates)."""
    volume = mrml_io.volume_from_node(volume_node)
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in volume.shape])).reshape(3, -1).T
    ras = volume.index_to_ras(corners)
    return float(np.abs(volume.index_to_ras(volume.ras_to_index(ras)) - ras).max())


def exported_segment(logic) -> np.ndarray:
    """The current segment as Slicer exports it on the volume's grid, bool (i, j, k)."""
    import slicer

    scene = logic.scene
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(logic.currentSegmentId)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic
    exported = segmentations.ExportSegmentsToLabelmapNode(
        logic.segmentationNode, ids, labelmap, logic.volumeNode
    )
    array = slicer.util.arrayFromVolume(labelmap).transpose(2, 1, 0) != 0
    scene.RemoveNode(labelmap)
    if not exported:
        raise RuntimeError("Slicer could not export the segment")
    return array


def click(logic, point_ras, positive: bool = True) -> bool:
    """Place one point as a user would and wait; returns whether the encoder ran."""
    node = logic.positiveNode if positive else logic.negativeNode
    node.AddControlPointWorld(vtk.vtkVector3d(*[float(v) for v in point_ras]), "")
    logic.synchronizePoints()
    if not logic.waitForIdle(TIMEOUT_S):
        raise RuntimeError(f"no result within {TIMEOUT_S:.0f} s")
    return logic.lastEncoderRan


def run_sphere_scenario(scene, predictor: Any = None, transform_shift_mm=(10.0, -4.0, 6.0)):
    """Segment the synthetic oblique sphere, under a parent transform, with two clicks.

    Args:
        scene: a MRML scene (``slicer.mrmlScene`` in Slicer).
        predictor: a model or predictor; default the oracle (the sphere's own mask), which
            checks geometry exactly.
        transform_shift_mm: translation of the parent transform the volume sits under.
    """
    from fastsam3d_core import Session, Volume
    from fastsam3d_core.session import OraclePredictor

    from .events import ErrorCollector
    from .logic import InteractiveSegmentationLogic

    image, mask, centre_ras = sphere_volumes()
    node = add_volume_node(scene, image, "FastSAM3D test sphere")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    to_world = np.eye(4)
    to_world[:3, 3] = transform_shift_mm
    transform.SetMatrixTransformToParent(mrml_io.array_to_matrix(to_world))
    node.SetAndObserveTransformNodeID(transform.GetID())
    world_mask = Volume(mask.array, to_world @ mask.ijk_to_ras)
    centre_world = centre_ras + np.asarray(transform_shift_mm)
    negative_world = centre_world + [0.0, 0.0, 1.3 * SPHERE_RADIUS_MM]
    predictor = predictor if predictor is not None else OraclePredictor(world_mask)
    observer = ErrorCollector()
    logic = InteractiveSegmentationLogic(scene, observer=observer)
    try:
        logic.setPredictor(predictor)
        logic.setInputs(node)
        encodes = [click(logic, centre_world)]
        encodes.append(click(logic, negative_world, False))
        segment = exported_segment(logic)
    finally:
        logic.cleanup()
    session = Session(Volume(image.array, to_world @ image.ijk_to_ras), predictor)
    session.add_point(centre_world)
    expected = session.add_point(negative_world, positive=False).mask.astype(bool)
    truth = mask.array.astype(bool)
    dice = 2 * float((segment & truth).sum()) / max(1.0, float(segment.sum() + truth.sum()))
    mismatched = int((segment != expected).sum())
    errors = [str(error) for error in observer.errors]
    return CheckResult(dice, mismatched, round_trip_error_mm(node), encodes, errors)
