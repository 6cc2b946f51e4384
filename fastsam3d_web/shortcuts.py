"""The page's keyboard shortcuts: the Slicer module's keys (the engine's table,
:data:`fastsam3d_mrml.shortcuts.SHORTCUTS`), and a help panel that lists them ("?" or the
toolbar's ? button).

A listener on the document (capturing, so that a view with the focus does not take the key
first) sends a key of the table to the server, which runs its action; keys typed into a text
field (a segment's new name, the file chooser, a PACS search) stay there.
"""

from __future__ import annotations

import json
from typing import Any

from trame.widgets import client, html
from trame_vuetify.widgets import vuetify3 as v3

from fastsam3d_mrml.shortcuts import DRAWING_ACTIONS, SHORTCUTS

# Keys of the page only: browsers keep Ctrl+N (a new window) for themselves.
PAGE_SHORTCUTS = SHORTCUTS + (
    ("Alt+N", "next-segment", "Start the next segment (the browser keeps Ctrl+N)"),
    ("?", "help", "Show or hide this list of keys"),
)

# The listener: KEYS and TRIGGER are filled in. A key is named as in the table: "Ctrl+"
# (Ctrl or Cmd), "Shift+", "Alt+", then the letter (from the key's code, so that Alt or a
# keyboard layout's dead keys do not change it); "?" as typed.
_LISTENER = """
(function () {
  if (window.fastsam3dKeys) { window.fastsam3dKeys.keys = new Set(KEYS); return; }
  window.fastsam3dKeys = { keys: new Set(KEYS) };
  document.addEventListener('keydown', function (event) {
    const target = event.target;
    const typing = target && (target.isContentEditable ||
      ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
    if (typing || event.repeat || !window.trame) { return; }
    const code = event.code || '';
    const letter = code.startsWith('Key') ? code.slice(3) : event.key;
    const name = event.key === '?' ? '?' : (event.ctrlKey || event.metaKey ? 'Ctrl+' : '') +
      (event.shiftKey ? 'Shift+' : '') + (event.altKey ? 'Alt+' : '') + letter;
    if (!window.fastsam3dKeys.keys.has(name)) { return; }
    event.preventDefault();
    event.stopPropagation();
    window.trame.trigger(TRIGGER, [name]);
  }, true);
})();
"""


class PageShortcuts:
    """The keys of ``page`` (a :class:`~fastsam3d_web.app.SegmentationPage`): each runs the
    action the Slicer module's key runs, on the page's tools and the engine."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.actions = {key: action for key, action, _ in PAGE_SHORTCUTS}
        page.state.show_keys = False
        page.state.shortcut_list = [{"key": key, "what": what} for key, _, what in PAGE_SHORTCUTS]

    def press(self, key: str) -> None:
        """Run the action of ``key`` (a name of :data:`PAGE_SHORTCUTS`)."""
        action = self.actions.get(str(key))
        if action is None:
            self.page.show_error(f"{key!r}: not a key of this page")
            return
        self.page.guarded(lambda: self.run(action))

    def run(self, action: str) -> None:
        """Run one action of the key table."""
        page, logic, placement = self.page, self.page.logic, self.page.placement
        if action == "help":
            page.state.show_keys = not page.state.show_keys
        elif action in ("positive-points", "negative-points") or action in DRAWING_ACTIONS:
            tool, positive = DRAWING_ACTIONS.get(action, ("point", action == "positive-points"))
            page.state.negative = not positive
            placement.select_tool(tool)
        elif action == "toggle-polarity":
            placement.toggle_polarity()
        else:
            engine_actions = {
                "toggle-visibility": logic.toggleSegmentVisibility,
                "delete-last-point": logic.deleteLastPoint,
                "suggest": logic.suggestNextPoint,
                "undo": logic.undo,
                "redo": logic.redo,
                "next-segment": logic.nextSegment,
            }
            engine_actions[action]()

    # -- widgets -------------------------------------------------------------------------

    def build_button(self) -> None:
        """The toolbar's ? button: the help panel."""
        v3.VBtn(
            icon="mdi-keyboard-outline",
            id="show-keys",
            title="Keyboard shortcuts (?)",
            variant="text",
            click="show_keys = !show_keys",
        )

    def build(self) -> None:
        """The key listener and the help panel."""
        trigger = self.page.server.controller.trigger_name(self.press)
        keys = json.dumps(sorted(self.actions))
        client.Script(_LISTENER.replace("KEYS", keys).replace("TRIGGER", json.dumps(trigger)))
        with v3.VDialog(v_model=("show_keys",), max_width=520):
            with v3.VCard(id="keys-help", title="Keyboard shortcuts"):
                with v3.VCardText():
                    with v3.VTable(density="compact"):
                        with html.Tbody():
                            with html.Tr(v_for="item in shortcut_list", key="item.key"):
                                with html.Td():
                                    html.Kbd("{{ item.key }}", classes="shortcut-key")
                                html.Td("{{ item.what }}")
                    html.Div(
                        "Keys typed into a text field stay there. In a slice view, Delete "
                        "removes the point under the mouse.",
                        classes="text-caption mt-2",
                    )
                with v3.VCardActions():
                    v3.VSpacer()
                    v3.VBtn("Close", id="close-keys", click="show_keys = false")
