"""MONAI Label's stateless requests onto the core's interactive sessions.

A MONAI Label client sends every point so far with each request. The server keeps each image
read once, with one embedding cache, and one :class:`~fastsam3d_core.session.Session` per label
on it, sharing that cache: labels are independent, as a client's labels are (a tumour may lie
inside the liver), and a crop encoded for one serves all. A request whose points continue the
label's previous ones (the same points, more added after them) runs only the added points, each a
decoder run when its crop is encoded; any other request (a point removed or moved) starts the
label again from its points. Images are bounded in number, least recently used first out, and
expire when idle.
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

from fastsam3d_core.geometry import Volume, check_segmentable
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import EmbeddingCache, Session

from .points import NO_POINTS, RequestPoints

#: Images held at once by default, and minutes an idle one is kept. An image holds its voxels as
#: read, a byte per voxel per label, and its crops' embeddings (0.8 MB each): a 512 x 512 x 300
#: CT about 0.25 GB with one label, 0.08 GB more per label.
DEFAULT_MAX_IMAGES = 4
DEFAULT_IDLE_MINUTES = 30.0
#: Labels (segments) one image's session may hold, each a byte per voxel: a client sending new
#: names without end would otherwise fill the server's memory.
MAX_LABELS = 32
#: Bytes of crop embeddings one image keeps (0.8 MB each; least recently used out beyond).
CACHE_BYTES = 256 << 20
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
    """A label's session and the points it holds; ``points`` is None when a request failed
    part-way, so that the next one starts the label again."""

    session: Session
    points: RequestPoints | None = NO_POINTS


@dataclass
class _Image:
    volume: Volume
    embeddings: EmbeddingCache
    labels: dict[str, _Label] = field(default_factory=dict)
    last_used: float = 0.0

    def check_name(self, name: str) -> None:
        """Refuse a new label beyond the bounds.

        Raises:
            ValueError: a name longer than :data:`MAX_LABEL_LENGTH`, or a label beyond
                :data:`MAX_LABELS` on this image.
        """
        if name in self.labels:
            return
        if len(name) > MAX_LABEL_LENGTH:
            raise ValueError(f"a label's name has at most {MAX_LABEL_LENGTH} characters")
        if len(self.labels) >= MAX_LABELS:
            raise ValueError(
                f"this image already has {MAX_LABELS} labels, the most one image holds; "
                "reuse a label's name"
            )


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
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._images)

    def segment(
        self,
        image: str | os.PathLike[str],
        label: str,
        points: RequestPoints,
        restart: bool = False,
    ) -> Segmented:
        """Run a request: ``points`` for ``label`` on the image file ``image`` (the file's path,
        size and time identify the image). ``restart`` starts the label again whatever its
        points (Slicer's MONAILabel module sends ``reset_state`` after a change of label).

        Raises:
            VolumeReadError: the image cannot be read (one line naming it).
            ValueError: a point outside the image, a label beyond the bounds, or an image the
                model cannot segment.
        """
        start = time.perf_counter()
        with self._lock:
            self.expire()
            entry = self._image(Path(image))
            points.check_inside(entry.volume)
            entry.check_name(label)
            state = entry.labels.get(label)
            earlier = state.points if state is not None else None
            restarted = restart or earlier is None or not points.continues(earlier)
            if state is None or restarted:
                # A new session: no undo history to carry (clients never undo on the server).
                state = _Label(self._new_session(entry))
                entry.labels[label] = state
            added = points.added_to(NO_POINTS if restarted else earlier)
            state.points = None  # until every point has run: a failure restarts next time
            encoder_runs = sum(
                state.session.add_point_ijk(index, positive).encoder_ran
                for index, positive in added
            )
            state.points = points
            return Segmented(
                np.array(state.session.mask()),
                entry.volume,
                len(added),
                encoder_runs,
                restarted and earlier is not None,
                time.perf_counter() - start,
            )

    def expire(self) -> int:
        """Drop the images idle for longer than ``idle_minutes``; return how many went."""
        with self._lock:
            now = self._clock()
            idle = [key for key, entry in self._images.items()
                    if now - entry.last_used > self.idle_seconds]  # fmt: skip
            for key in idle:
                del self._images[key]
            return len(idle)

    def _new_session(self, entry: _Image) -> Session:
        return Session(entry.volume, self.predictor, embeddings=entry.embeddings, undo_steps=0)

    def _image(self, path: Path) -> _Image:
        # A file's identity includes its size and time: an image replaced under the same name
        # starts anew rather than use the old voxels.
        stat = path.stat() if path.exists() else None
        key = (str(path.resolve()), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)
        entry = self._images.get(key)
        if entry is None:
            volume = read_volume(path)
            check_segmentable(volume)
            entry = _Image(volume, EmbeddingCache(CACHE_BYTES))
            self._images[key] = entry
            while len(self._images) > self.max_images:
                self._images.popitem(last=False)
        self._images.move_to_end(key)
        entry.last_used = self._clock()
        return entry
