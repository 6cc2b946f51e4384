"""MONAI Label's stateless requests onto the core's interactive sessions.

A MONAI Label client sends every point so far with each request. The server keeps one
:class:`~fastsam3d_core.session.Session` per image (the image read once, each crop's embedding
cached) and one segment in it per label. A request whose points continue the label's previous
ones (the same points, more added after them) runs only the added points, each a decoder run when
its crop is encoded; any other request (a point removed or moved, a new order) starts the label's
segment again from its points. Sessions are bounded in number, least recently used first out,
and expire when idle.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fastsam3d_core.geometry import Volume
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import Session

from .points import NO_POINTS, RequestPoints

#: Images held at once by default, and minutes an idle one is kept. A CT session holds its image
#: (as float32) and a byte per voxel per label: about 0.4 GB for 512 x 512 x 300 and one label.
DEFAULT_MAX_IMAGES = 4
DEFAULT_IDLE_MINUTES = 30.0
#: Labels (segments) one image's session may hold, each a byte per voxel: a client sending new
#: names without end would otherwise fill the server's memory.
MAX_LABELS = 32
#: Characters a label's name may have (it becomes a segment's name, and a DICOM SEG's label).
MAX_LABEL_LENGTH = 64


@dataclass(frozen=True)
class Segmented:
    """The answer to one request.

    Attributes:
        mask: the label's voxels, uint8 ``(I, J, K)`` on ``volume``'s grid (a copy).
        volume: the image the request was run on (its grid is the label's).
        decoded: points run through the model for this request (0: the same points again).
        encoder_runs: how many of those first encoded their crop (the slow part).
        restarted: whether the label's segment was started again from all its points.
        seconds: server time of the request, reading the image included.
    """

    mask: np.ndarray
    volume: Volume
    decoded: int
    encoder_runs: int
    restarted: bool
    seconds: float


@dataclass
class _Label:
    """A label's segment and the points it holds; ``points`` is None when a request failed
    part-way, so that the next one starts the label again."""

    segment_id: int
    points: RequestPoints | None = NO_POINTS


@dataclass
class _Image:
    session: Session
    labels: dict[str, _Label] = field(default_factory=dict)
    last_used: float = 0.0

    def label(self, name: str) -> _Label:
        """The label's segment, the session's first one for its first label.

        Raises:
            ValueError: a name longer than :data:`MAX_LABEL_LENGTH`, or a label beyond
                :data:`MAX_LABELS` on this image.
        """
        if name not in self.labels:
            if len(name) > MAX_LABEL_LENGTH:
                raise ValueError(f"a label's name has at most {MAX_LABEL_LENGTH} characters")
            if len(self.labels) >= MAX_LABELS:
                raise ValueError(
                    f"this image already has {MAX_LABELS} labels, the most one image holds; "
                    "reuse a label's name"
                )
            if self.labels:
                self.session.new_segment(name=name)
            self.labels[name] = _Label(self.session.current_segment.segment_id)
        return self.labels[name]


class ImageSessions:
    """Sessions keyed by image file, bounded and expiring; safe to call from several threads
    (requests run one at a time: they share one model).

    Args:
        predictor: the model (or any :class:`~fastsam3d_core.session.Predictor`) every session
            uses.
        max_images: images held at once; the least recently used one goes first.
        idle_minutes: an image not used for this long is dropped (see :meth:`expire`).
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        predictor: Any,
        *,
        max_images: int = DEFAULT_MAX_IMAGES,
        idle_minutes: float = DEFAULT_IDLE_MINUTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_images < 1 or not idle_minutes > 0:
            raise ValueError(
                f"sessions need max_images >= 1 and idle_minutes > 0, not {max_images} and "
                f"{idle_minutes}"
            )
        self.predictor = predictor
        self.max_images = max_images
        self.idle_seconds = idle_minutes * 60.0
        self._clock = clock
        self._images: OrderedDict[tuple[str, int, int], _Image] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._images)

    def segment(
        self,
        image: str | os.PathLike[str],
        label: str,
        points: RequestPoints,
        image_id: str | None = None,
        restart: bool = False,
    ) -> Segmented:
        """Run a request: ``points`` for ``label`` on the image file ``image``.

        ``image_id`` names the image where its file's name may change between requests (MONAI
        Label gives its first request on a series a temporary file, later ones its cached copy):
        requests with the same id share a session. Without it, the file (path, size and time)
        identifies the image. ``restart`` starts the label again whatever its points (Slicer's
        MONAILabel module sends ``reset_state`` after a change of label or image).

        Raises:
            VolumeReadError: the image cannot be read (one line naming it).
            ValueError: a point outside the image, or an image the model cannot segment.
        """
        start = time.perf_counter()
        with self._lock:
            self.expire()
            entry = self._image(Path(image), image_id)
            points.check_inside(entry.session.volume)
            state = entry.label(label)
            entry.session.select_segment(state.segment_id)
            earlier = state.points
            restarted = restart or earlier is None or not points.continues(earlier)
            added = points.added_to(earlier if earlier is not None and not restarted else NO_POINTS)
            state.points = None  # until every point has run: a failure restarts next time
            if restarted:
                entry.session.reset()
            encoder_runs = sum(
                entry.session.add_point_ijk(index, positive).encoder_ran
                for index, positive in added
            )
            state.points = points
            return Segmented(
                np.array(entry.session.mask(state.segment_id)),
                entry.session.volume,
                len(added),
                encoder_runs,
                restarted,
                time.perf_counter() - start,
            )

    def expire(self) -> int:
        """Drop the images idle for longer than ``idle_minutes``; return how many went."""
        now = self._clock()
        idle = [key for key, entry in self._images.items()
                if now - entry.last_used > self.idle_seconds]  # fmt: skip
        for key in idle:
            del self._images[key]
        return len(idle)

    def _image(self, path: Path, image_id: str | None) -> _Image:
        # A file's identity includes its size and time: an image replaced under the same name
        # starts a new session rather than use the old voxels.
        stat = path.stat() if path.exists() else None
        key = ("id:" + image_id, 0, 0) if image_id else (
            str(path.resolve()), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0
        )
        entry = self._images.get(key)
        if entry is None:
            entry = _Image(Session(read_volume(path), self.predictor))
            self._images[key] = entry
            while len(self._images) > self.max_images:
                self._images.popitem(last=False)
        self._images.move_to_end(key)
        entry.last_used = self._clock()
        return entry
