"""The uncertainty overlay: the session's entropy as a scalar volume over the image (main thread).

The entropy comes from the core session's self-ensembling (``Session.uncertainty``: this many
decoder passes on the cached embedding), in bits, 0 where the model is sure and 1 where it is
guessing; the overlay shows it on the image's grid with a cold-to-hot colour table.
"""

from __future__ import annotations

from typing import Any

from . import mrml_io

# Self-ensembling passes for the uncertainty overlay (the paper's default).
UNCERTAINTY_SAMPLES = 20
UNCERTAINTY_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"
OVERLAY_NAME = "FastSAM3D uncertainty"


def show_entropy(scene: Any, overlay_node: Any, volume_node: Any, entropy: Any) -> Any:
    """Fill the overlay volume node with ``entropy`` (array (I, J, K) on the volume's grid, in
    [0, 1]) and show it in [0, 1]; returns the node, made anew where ``overlay_node`` is None or
    was removed from the scene."""
    node = overlay_node
    if node is None or scene.GetNodeByID(node.GetID()) is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", OVERLAY_NAME)
    mrml_io.update_overlay_volume(node, volume_node, entropy)
    node.CreateDefaultDisplayNodes()  # a volume filled from an array has none yet
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    if scene.GetNodeByID(UNCERTAINTY_COLOR_NODE_ID):
        display.SetAndObserveColorNodeID(UNCERTAINTY_COLOR_NODE_ID)
    return node
