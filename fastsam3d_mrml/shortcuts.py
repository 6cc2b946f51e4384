"""The keyboard shortcuts of every front end: one table, read by the Slicer module (main-window
shortcuts) and the browser page (keys on the page, listed in its help panel).

Keys are written as Qt's ``QKeySequence`` reads them: modifiers ``Ctrl+``, ``Shift+``, ``Alt+``
in that order, then one upper-case letter. Single letters avoid the keys that Slicer's views
take themselves (slice views: g t f b v r [ ] { } and arrows; 3-D view: r + - i; a point under
the mouse: s, Delete, BackSpace), as they would be taken over by a main-window shortcut.
"""

from __future__ import annotations

# (key, action, what it does). The action names what each front end connects to the key.
SHORTCUTS = (
    ("P", "positive-points", "Place positive points"),
    ("N", "negative-points", "Place negative points"),
    # SlicerNNInteractive's T and V are Slicer's own keys in slice views (foreground opacity,
    # slice visibility): the same actions here take Shift+T and H.
    ("Shift+T", "toggle-polarity", "Switch between positive and negative"),
    ("H", "toggle-visibility", "Show or hide the current segment"),
    ("X", "box", "Draw a positive box"),
    ("Shift+X", "negative-box", "Draw a negative box"),
    ("W", "scribble", "Draw a positive scribble"),
    ("Shift+W", "negative-scribble", "Draw a negative scribble"),
    ("L", "lasso", "Draw a positive lasso"),
    ("Shift+L", "negative-lasso", "Draw a negative lasso"),
    ("D", "delete-last-point", "Delete the last point"),
    ("S", "suggest", "Suggest the next point (the most uncertain)"),
    ("Ctrl+Z", "undo", "Undo"),
    ("Ctrl+Y", "redo", "Redo"),
    ("Ctrl+N", "next-segment", "Start the next segment"),
)

# The drawing actions: action -> (prompt kind, positive).
DRAWING_ACTIONS = {
    f"{'negative-' if not positive else ''}{kind}": (kind, positive)
    for kind in ("box", "scribble", "lasso")
    for positive in (True, False)
}


def shortcut_keys() -> dict[str, str]:
    """Action -> its key, for every action of :data:`SHORTCUTS`."""
    return {action: key for key, action, _ in SHORTCUTS}
