"""The browser front end: trame-slicer's MRML views driving the interaction engine.

One interaction engine (``fastsam3d_mrml.logic.InteractiveSegmentationLogic``: markups in,
segments out) and two front ends, Slicer's Qt panel and this page. Needs the ``web`` extra.
"""
