"""The page's progress strip: what long work runs now (loading a model, the first encode of a
crop, an upload), with a bar, so that the page never looks frozen.

Two sources feed it. The engine reports its long steps as status lines while its worker is
busy ("Loading fastsam3d on cpu...", "Downloading fastsam3d weights: 12 of 50 MB (24%)",
"Preparing: encoding the image around the point..."): :class:`PageProgress` follows ``status``
and ``busy`` in the page's state and shows those, with the percentage as the bar's value where
the line ends with one. The page's own work (an upload: sending, unpacking, checking, opening)
is shown with :meth:`PageProgress.show` and wins over the engine's until :meth:`PageProgress.done`.

State: ``work`` (the line; "" when nothing long runs) and ``work_fraction`` (0 to 1, or None
for an indeterminate bar).
"""

from __future__ import annotations

import re
from typing import Any

# The engine's status lines that start long work (a click's own "Segmenting..." is short, and
# would only make the bar flicker).
LONG_WORK = ("Loading", "Downloading", "Connecting", "Preparing", "Encoding", "Estimating")
# "... (42%)" at the end of a status line: the engine's fraction of the step done.
_PERCENT = re.compile(r"\((\d{1,3})%\)\s*$")


def engine_work(status: str, busy: bool) -> tuple[str, float | None]:
    """(the progress line, the fraction done or None) that the engine's ``status`` means while
    it is ``busy``; ("", None) when it runs nothing long."""
    if not busy or not status.startswith(LONG_WORK):
        return "", None
    percent = _PERCENT.search(status)
    fraction = min(int(percent.group(1)), 100) / 100 if percent else None
    return status, fraction


class PageProgress:
    """The progress strip's state, from the engine's status and the page's own work.

    Args:
        state: the page's trame state (holding ``status`` and ``busy``).
    """

    def __init__(self, state: Any) -> None:
        self.state = state
        self._own = False  # the page's own work is shown
        state.work, state.work_fraction = "", None
        state.change("status", "busy")(self._follow_engine)

    def show(self, line: str, fraction: float | None = None) -> None:
        """Show the page's own work (until :meth:`done`): ``line``, and the bar at
        ``fraction`` (0 to 1) or indeterminate (None)."""
        self._own = True
        self.state.work, self.state.work_fraction = line, fraction

    def done(self) -> None:
        """The page's own work ended: the engine's long work, if any, shows again."""
        self._own = False
        self._follow_engine(self.state.status or "", bool(self.state.busy))

    def _follow_engine(self, status: str = "", busy: bool = False, **_: Any) -> None:
        if self._own:
            return
        line, fraction = engine_work(status or "", bool(busy))
        if (line, fraction) != (self.state.work, self.state.work_fraction):
            self.state.work, self.state.work_fraction = line, fraction
