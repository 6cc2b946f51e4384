"""Undo and redo: the session's edits, each with the states around it and the boxes it wrote."""

from __future__ import annotations

from .state import Edit

# Undo steps kept; older ones are dropped.
MAX_UNDO = 100


class History:
    """The edits that undo reverts (at most ``steps``, by default :data:`MAX_UNDO`; 0 keeps
    none) and those that redo re-applies."""

    def __init__(self, steps: int = MAX_UNDO) -> None:
        if steps < 0:
            raise ValueError(f"undo steps must be 0 or more, not {steps}")
        self.steps = steps
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []

    def record(self, edit: Edit) -> None:
        """A new edit: it is the one undo reverts next, and nothing is left to redo."""
        self._undo.append(edit)
        del self._undo[: max(len(self._undo) - self.steps, 0)]
        self._redo.clear()

    def clear(self) -> None:
        """Forget every edit: nothing is left to undo or redo."""
        self._undo.clear()
        self._redo.clear()

    def step(self, forward: bool) -> Edit | None:
        """The edit to re-apply (``forward``, redo) or to revert (undo), moved to the other
        stack; None when there is none."""
        source, target = (self._redo, self._undo) if forward else (self._undo, self._redo)
        if not source:
            return None
        edit = source.pop()
        target.append(edit)
        return edit
