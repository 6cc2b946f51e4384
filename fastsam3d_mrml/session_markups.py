"""Every markups node the user edits a session through, as one: the points
(:class:`~.markups_clicks.ClickMarkups`, a control point per click) and the drawn prompts
(:class:`~.markups_prompts.PromptMarkups`, a node per box, scribble or lasso).

Both follow the same rule: what was sent to the session is kept (``sent``); the difference
between the nodes and it is the edits to send; once every edit sent has run, the session's
clicks and prompts are shown where they differ from it (undo, redo, another segment, a refused
edit). Only MRML is used (no Qt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from fastsam3d_core.session import Click, Prompt

from .markups_clicks import ClickMarkups
from .markups_prompts import PromptMarkups


@dataclass(frozen=True, eq=False)
class Unsent:
    """The nodes as placed and drawn now, and the edits that bring the session to them.

    Attributes:
        points: the clicks of the placed points, by click id.
        drawings: the prompts of the finished prompt nodes, by prompt id.
        edits: (kind, click or prompt): ("remove", "add" or "move"), in the order the worker
            runs them, the points' first.
    """

    points: dict[str, Click]
    drawings: dict[str, Prompt]
    edits: list[tuple[str, Click | Prompt]]


class SessionMarkups:
    """The point nodes and the prompt nodes of one scene.

    Attributes:
        clicks: the positive, negative and suggestion point nodes.
        prompts: the prompt nodes.
    """

    def __init__(self, scene: Any) -> None:
        self.clicks = ClickMarkups(scene)
        self.prompts = PromptMarkups(scene)

    @property
    def updating(self) -> bool:
        """True while the points are changed by this object (their events are not the
        user's)."""
        return self.clicks.updating

    def attach(self, on_edited: Callable[[], None], clear: bool) -> None:
        """For a new session: the point nodes made again where missing, ``on_edited`` called
        after the user's edits of any node, nothing counted as sent; with ``clear``, every point
        and prompt node emptied or removed (another volume)."""
        self.clicks.ensure_nodes()
        self.clicks.observe(on_edited)
        self.prompts.observe(on_edited)
        if clear:
            self.clicks.clear()
            self.prompts.clear()
        self.clicks.sent, self.prompts.sent = {}, {}

    def send_all(self) -> tuple[tuple[Click, ...], tuple[Prompt, ...]]:
        """Every placed point and finished drawing, as a new session places them again; all
        count as sent."""
        return self.clicks.send_all(), self.prompts.send_all()

    def unsent(self) -> Unsent:
        points, edits = self.clicks.unsent_edits()
        drawings, drawn = self.prompts.unsent_edits()
        return Unsent(points, drawings, [*edits, *drawn])

    def mark_sent(self, unsent: Unsent) -> None:
        """The edits of ``unsent`` were sent: its points and drawings are what the session will
        hold."""
        self.clicks.sent, self.prompts.sent = unsent.points, unsent.drawings

    def show_session(self, clicks: tuple[Click, ...], prompts: tuple[Prompt, ...]) -> None:
        """Once every edit sent has run: show the session's clicks and prompts where they
        differ from those sent."""
        self.clicks.show_session(clicks)
        self.prompts.show_session(prompts)

    def take_back(self) -> None:
        """Show what was sent: an edit that could not be sent is taken back."""
        self.clicks.show(self.clicks.sent.values())
        self.prompts.show(self.prompts.sent.values())

    def unobserve(self) -> None:
        self.clicks.unobserve()
        self.prompts.unobserve()
