"""The one place that reads and writes MRML segments for a session (main thread).

Slicer keeps segments in labelmap layers that several segments share, each segment a label
value of its layer (``vtkSegmentation::AddEmptySegment`` puts new segments in the first layer).
A segment is therefore read as ``layer == segment.GetLabelValue()``, never as its whole layer,
and written in place inside the changed box only: other segments of the layer, and the
segment's own voxels outside the box, stay as they are. After a write the layer is marked
modified, which is how Slicer's own editing tells displays and derived representations (closed
surfaces) to update. A layer holds one label per voxel: a write never replaces the label of a
segment the session does not own; where segments may overlap, the written segment moves to a
layer of its own first, as Slicer's own editing does.

Everything is on the volume's voxel lattice, bool arrays indexed (i, j, k) like the core's
:class:`~fastsam3d_core.Volume`. A layer that holds voxels must lie on that lattice (up to a
whole-voxel shift, which its extent absorbs); an empty layer is put on it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from fastsam3d_core.geometry import box_slices

from .mrml_io import array_to_matrix, ijk_to_segmentation_frame, matrix_to_array

BINARY_LABELMAP = "Binary labelmap"
# A layer's lattice matches the volume's if its axes agree to this (voxel units) ...
LATTICE_TOLERANCE = 1e-4
# ... and its origin lies this close to a whole voxel of the volume.
OFFSET_TOLERANCE = 1e-3


class SegmentationNotSupportedError(ValueError):
    """The segmentation cannot be edited on the volume's grid."""


class SegmentWriter:
    """Reads and writes one segmentation's segments on one volume's voxel lattice.

    Args:
        segmentation_node: the ``vtkMRMLSegmentationNode`` to edit.
        volume_node: the scalar volume whose lattice the session works on.

    Attributes:
        protect: keep the voxels of segments the session does not own (else the written
            segment may overlap them).
        current: the session's current segment id, as the last update applied said.
        applying: True while an update is written (the segments it adds are not the user's).

    Raises:
        SegmentationNotSupportedError: a layer with voxels lies on another lattice; the node
            is left as it was.
    """

    def __init__(self, segmentation_node, volume_node) -> None:
        self.node = segmentation_node
        self.volume_node = volume_node
        self.shape = tuple(volume_node.GetImageData().GetDimensions())
        # Voxel indices (i, j, k) of the volume to the segmentation node's local frame.
        self.ijk_to_frame = ijk_to_segmentation_frame(volume_node, segmentation_node)
        for layer in range(self.segmentation.GetNumberOfLayers(BINARY_LABELMAP)):
            self._offset(self.segmentation.GetLayerDataObject(layer, BINARY_LABELMAP))
        if self.segmentation.GetSourceRepresentationName() != BINARY_LABELMAP:
            # Segments loaded as surfaces: edit them as labelmaps, as the Segment Editor does.
            segmentation_node.CreateBinaryLabelmapRepresentation()
            segmentation_node.SetSourceRepresentationToBinaryLabelmap()
        self.protect = True
        self.current = 1
        self.applying = False
        # Session segment id -> MRML segment ID, for the session now open.
        self._mrml_ids: dict[int, str] = {}
        self._created: set[str] = set()  # MRML segments made for session segments
        self._live: set[int] = set()  # session segments that exist now (not undone)
        self._dropped: set[int] = set()  # session segments whose MRML segment the user deleted
        # The protected segments as the session last read them (see foreign_if_changed).
        self._protected_read: tuple = ()

    @property
    def segmentation(self):
        return self.node.GetSegmentation()

    # -- session segments ----------------------------------------------------------------

    def start_session(self, first_segment_id: str | None, protect: bool) -> None:
        """A new session: its first segment writes to this MRML segment (None: a new one)."""
        self._mrml_ids = {1: first_segment_id} if first_segment_id else {}
        self._created = set()
        self._live = {1}
        self._dropped = set()
        self.protect = protect
        self.current = 1

    def continue_from(self, previous: SegmentWriter) -> None:
        """Take over another writer's session segments (the same nodes, a new writer)."""
        self._mrml_ids = dict(previous._mrml_ids)
        self._created = set(previous._created)
        self._live = set(previous._live)
        self._dropped = set(previous._dropped)
        self.protect = previous.protect
        self.current = previous.current

    def bind(self, session_id: int, segment_id: str) -> None:
        """Make a session segment write to an existing MRML segment (one being refined)."""
        self._mrml_ids[session_id] = segment_id

    def drop(self, session_id: int) -> None:
        """The user deleted this session segment's MRML segment: it is not made again, and
        what the session still writes to it is ignored."""
        self._dropped.add(session_id)
        self._live.discard(session_id)

    def current_mrml_id(self) -> str | None:
        """The MRML segment of the session's current segment, if it has one (yet)."""
        return None if self.current in self._dropped else self._mrml_ids.get(self.current)

    def session_id(self, segment_id: str) -> int | None:
        """The live session segment writing to this MRML segment, if any."""
        for session_id, mapped in self._mrml_ids.items():
            if mapped == segment_id and session_id in self._live:
                return session_id
        return None

    def protected_ids(self) -> list[str]:
        """The MRML segments whose voxels the session protects (its foreign mask): all but
        those made for this session and the one its first segment writes to. A refined
        segment stays in: the session lets only its refinement keep its voxels."""
        first = self._mrml_ids.get(1)
        return [s for s in self.segment_ids() if s not in self._created and s != first]

    def protected_state(self, segment_ids: list[str] | None = None) -> tuple:
        """Changes when another tool adds, removes or edits a protected segment (default
        :meth:`protected_ids`): the session then needs their voxels again. Writes change it
        too: take it after writing."""
        state = []
        for segment_id in self.protected_ids() if segment_ids is None else segment_ids:
            segment = self.segmentation.GetSegment(segment_id)
            layer = segment.GetRepresentation(BINARY_LABELMAP)
            state.append((segment_id, segment.GetLabelValue(), layer.GetMTime() if layer else 0))
        return tuple(state)

    def read_for_session(self, target: str) -> tuple[np.ndarray, np.ndarray | None]:
        """What a new session whose first segment writes to ``target`` ("" for a new
        segment) reads of MRML: the voxels of every other segment, which it protects, and the
        target's own (None for none), bool (I, J, K)."""
        protected = [s for s in self.segment_ids() if s != target]
        self._protected_read = self.protected_state(protected)
        return self.voxels_of(protected), (self.read(target) if target else None)

    def foreign_if_changed(self) -> np.ndarray | None:
        """The protected segments' voxels, bool (I, J, K), if another tool changed them since
        the session last read them (painted with the Segment Editor meanwhile), for the
        session to read again; None where they are as it read them."""
        state = self.protected_state()
        if state == self._protected_read:
            return None
        foreign = self.voxels_of(self.protected_ids())
        self._protected_read = state
        return foreign

    def apply(self, update) -> tuple[bool, list[int]]:
        """Bring MRML to the session as the worker's ``Update`` left it: the current
        segment, the session segments' MRML segments (see :meth:`sync_segments`, whose result
        this returns), then every change written.

        Writing changes the protected segments' state: it is taken again afterwards.
        """
        self.current = update.current
        self.applying = True
        try:
            changed, remade = self.sync_segments(update.segments)
            for change in update.changes:
                self.write_change(change)
            self._protected_read = self.protected_state()
        finally:
            self.applying = False
        return changed, remade

    def sync_segments(self, segments) -> tuple[bool, list[int]]:
        """Give every live session segment ``(id, name, colour)`` an MRML segment, and remove
        the ones this session made for segments that no longer live (an undone "next
        segment").

        Returns:
            Whether segments were added or removed, and the live session segments whose MRML
            segment was deleted by someone else and made again (empty: write all of it).
        """
        self._live = {session_id for session_id, _, _ in segments} - self._dropped
        changed, remade = False, []
        for session_id, name, color in segments:
            if session_id in self._dropped:
                continue
            mapped = self._mrml_ids.get(session_id)
            if mapped is None or self.segmentation.GetSegment(mapped) is None:
                new_id = self.segmentation.AddEmptySegment(mapped or "", name, list(color))
                self._mrml_ids[session_id] = new_id
                self._created.add(new_id)
                changed = True
                if mapped is not None:
                    remade.append(session_id)
        for session_id, mapped in self._mrml_ids.items():
            gone = session_id not in self._live and mapped in self._created
            if gone and self.segmentation.GetSegment(mapped) is not None:
                self.segmentation.RemoveSegment(mapped)
                changed = True
        return changed, remade

    def write_change(self, change) -> None:
        """Write the core's ``SegmentChange`` (a session segment's box of voxels) to the MRML
        segment of its session segment."""
        segment_id = self._mrml_ids.get(change.segment_id)
        if segment_id is not None and change.segment_id in self._live:
            self.write(segment_id, change.lo_ijk, change.hi_ijk, change.mask)

    def segment_ids(self) -> list[str]:
        ids = vtk.vtkStringArray()
        self.segmentation.GetSegmentIDs(ids)
        return [ids.GetValue(n) for n in range(ids.GetNumberOfValues())]

    # -- reading -------------------------------------------------------------------------

    def read(self, segment_id: str) -> np.ndarray:
        """A segment's voxels, bool (I, J, K) on the volume's grid."""
        return self.voxels_of([segment_id])

    def voxels_of(self, segment_ids: Iterable[str]) -> np.ndarray:
        """The union of these segments' voxels, bool (I, J, K) on the volume's grid.

        Each layer is read once, whatever the number of segments in it.
        """
        union = np.zeros(self.shape, dtype=bool)
        wanted = set(segment_ids)
        for layer_index in range(self.segmentation.GetNumberOfLayers(BINARY_LABELMAP)):
            members = self.segmentation.GetSegmentIDsForLayer(layer_index, BINARY_LABELMAP)
            labels = [
                self.segmentation.GetSegment(s).GetLabelValue() for s in members if s in wanted
            ]
            layer = self.segmentation.GetLayerDataObject(layer_index, BINARY_LABELMAP)
            if not labels or _is_empty(layer):
                continue
            values, box = self._layer_in_volume(layer)
            if values is not None:
                union[box] |= np.isin(values, labels)
        return union

    # -- writing -------------------------------------------------------------------------

    def write(self, segment_id: str, lo_ijk, hi_ijk, mask: np.ndarray) -> None:
        """Make the segment exactly ``mask`` (bool, indexed (i, j, k)) inside the volume's box
        ``[lo, hi)``; its voxels outside the box and other segments' voxels outside ``mask``
        are kept. Where ``mask`` covers a voxel of another segment of the same layer, that
        voxel becomes this segment's if a live session segment owns the other one (the session
        keeps them apart); otherwise it stays the other's (:attr:`protect`), or this segment
        moves to a layer of its own and both hold it."""
        segment = self.segmentation.GetSegment(segment_id)
        if segment is None:
            raise KeyError(f"{self.node.GetName()} has no segment {segment_id!r}")
        mask_kji = np.asarray(mask, bool).transpose(2, 1, 0)
        layer, label, lo, hi = self._target(segment, lo_ijk, hi_ijk)
        if not mask_kji.any() and not _overlaps(layer, lo, hi):
            return  # nothing to clear where the layer holds nothing
        _ensure_holds(layer, lo, hi, label)
        view = _box_view(layer, lo, hi)  # (k, j, i)
        unowned = mask_kji & np.isin(view, self._unowned_labels(segment_id))
        if unowned.any() and not self.protect:
            # Segments may overlap: this one moves to a layer of its own, keeping theirs.
            self.segmentation.SeparateSegmentLabelmap(segment_id)
            layer, label, lo, hi = self._target(segment, lo_ijk, hi_ijk)
            _ensure_holds(layer, lo, hi, label)
            view = _box_view(layer, lo, hi)
        elif unowned.any():
            mask_kji = mask_kji & ~unowned  # painted since the session read them: kept
        view[...] = np.where(mask_kji, label, np.where(view == label, 0, view))
        layer.GetPointData().GetScalars().Modified()
        layer.Modified()
        # The views' segmentations displayable manager listens to the segment, not to its
        # layer: without this, a view drawn before the click never shows the new voxels.
        segment.Modified()

    def _target(self, segment, lo_ijk, hi_ijk):
        """The segment's layer, label value, and the volume box [lo, hi) in layer indices."""
        layer = segment.GetRepresentation(BINARY_LABELMAP)
        if _is_empty(layer):
            layer.SetImageToWorldMatrix(array_to_matrix(self.ijk_to_frame))
        offset = self._offset(layer)
        lo = np.asarray(lo_ijk, int) + offset
        hi = np.asarray(hi_ijk, int) + offset
        return layer, segment.GetLabelValue(), lo, hi

    def _unowned_labels(self, segment_id: str) -> list[int]:
        """Label values of the other segments in this one's layer that no live session
        segment writes to."""
        layer_index = self.segmentation.GetLayerIndex(segment_id, BINARY_LABELMAP)
        owned = {self._mrml_ids.get(s) for s in self._live} | {segment_id}
        members = self.segmentation.GetSegmentIDsForLayer(layer_index, BINARY_LABELMAP)
        return [self.segmentation.GetSegment(s).GetLabelValue() for s in members if s not in owned]

    # -- lattice -------------------------------------------------------------------------

    def _offset(self, layer) -> np.ndarray:
        """Layer index minus volume index, int (3,), for a layer on the volume's lattice.

        Raises:
            SegmentationNotSupportedError: the layer holds voxels on another lattice.
        """
        if _is_empty(layer):
            return np.zeros(3, int)
        layer_to_frame = matrix_to_array(_image_to_world(layer))
        volume_to_layer = np.linalg.inv(layer_to_frame) @ self.ijk_to_frame
        offset = volume_to_layer[:3, 3]
        aligned = np.allclose(volume_to_layer[:3, :3], np.eye(3), atol=LATTICE_TOLERANCE)
        if not aligned or not np.allclose(offset, np.round(offset), atol=OFFSET_TOLERANCE):
            raise SegmentationNotSupportedError(
                f"the segments of {self.node.GetName()} lie on another voxel grid than "
                f"{self.volume_node.GetName()}: choose no segmentation (a new one is made), "
                "or resample it to this volume first (Segment Editor, Specify geometry)"
            )
        return np.round(offset).astype(int)

    def _layer_in_volume(self, layer) -> tuple[np.ndarray | None, tuple[slice, ...]]:
        """The layer's values over the part of the volume it covers, indexed (i, j, k), and
        that part as volume slices; (None, ()) where they do not overlap."""
        offset = self._offset(layer)
        extent = np.array(layer.GetExtent()).reshape(3, 2)
        lo = np.maximum(extent[:, 0] - offset, 0)
        hi = np.minimum(extent[:, 1] + 1 - offset, self.shape)
        if np.any(lo >= hi):
            return None, ()
        values = _box_view(layer, lo + offset, hi + offset).transpose(2, 1, 0)
        return values, box_slices(lo, hi)


def segmentation_for(scene, volume_node, segmentation_node=None):
    """``segmentation_node``, or a new one named after the volume under its transform; one
    without segments takes the volume's geometry (a new segment is made on its grid)."""
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode", f"{volume_node.GetName()} FastSAM3D"
        )
        segmentation_node.CreateDefaultDisplayNodes()
        segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    if segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return segmentation_node


def _image_to_world(layer) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    layer.GetImageToWorldMatrix(matrix)
    return matrix


def _is_empty(layer) -> bool:
    extent = layer.GetExtent()
    return (
        extent[1] < extent[0]
        or extent[3] < extent[2]
        or extent[5] < extent[4]
        or layer.GetPointData().GetScalars() is None
    )


def _overlaps(layer, lo: np.ndarray, hi: np.ndarray) -> bool:
    if _is_empty(layer):
        return False
    extent = np.array(layer.GetExtent()).reshape(3, 2)
    return bool(np.all(np.maximum(lo, extent[:, 0]) < np.minimum(hi, extent[:, 1] + 1)))


def _ensure_holds(layer, lo: np.ndarray, hi: np.ndarray, label: int) -> None:
    """Grow the layer's extent to hold the box [lo, hi) (layer indices) and its scalar type to
    hold ``label``, keeping its voxels, geometry and object (segments share it)."""
    slicer.vtkOrientedImageDataResample.CastImageForValue(layer, label)
    if _is_empty(layer):
        new_lo, new_hi = lo, hi
    else:
        extent = np.array(layer.GetExtent()).reshape(3, 2)
        new_lo = np.minimum(lo, extent[:, 0])
        new_hi = np.maximum(hi, extent[:, 1] + 1)
        if np.array_equal(new_lo, extent[:, 0]) and np.array_equal(new_hi, extent[:, 1] + 1):
            return
    grown = slicer.vtkOrientedImageData()
    grown.SetExtent(*[int(v) for pair in zip(new_lo, new_hi - 1) for v in pair])
    scalar_type = layer.GetScalarType() if not _is_empty(layer) else vtk.VTK_UNSIGNED_CHAR
    grown.AllocateScalars(scalar_type, 1)
    grown.SetImageToWorldMatrix(_image_to_world(layer))
    _box_view(grown, new_lo, new_hi)[...] = 0
    if not _is_empty(layer):
        extent = np.array(layer.GetExtent()).reshape(3, 2)
        old = _box_view(layer, extent[:, 0], extent[:, 1] + 1)
        _box_view(grown, extent[:, 0], extent[:, 1] + 1)[...] = old
    matrix = _image_to_world(layer)
    layer.ShallowCopy(grown)
    layer.SetImageToWorldMatrix(matrix)


def _box_view(image, lo, hi) -> np.ndarray:
    """A writable view (k, j, i) of an image's voxels in the box [lo, hi) of its indices."""
    extent = np.array(image.GetExtent()).reshape(3, 2)
    dims = extent[:, 1] - extent[:, 0] + 1
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = scalars.reshape(dims[::-1])
    start = np.asarray(lo) - extent[:, 0]
    stop = np.asarray(hi) - extent[:, 0]
    return array[start[2] : stop[2], start[1] : stop[1], start[0] : stop[0]]
