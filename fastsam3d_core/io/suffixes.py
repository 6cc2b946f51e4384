"""File-name suffixes of the image formats: the one table that readers, writers and front ends
(command line, training and evaluation folders, the Slicer engine) all use.

Compare them with the lower-cased file name (``name.lower().endswith(IMAGE_SUFFIXES)``). Nothing
here imports SimpleITK or torch.
"""

from __future__ import annotations

# Volumes as SimpleITK reads them with their geometry (NIfTI, NRRD with attached or detached
# data, MetaImage), which is what an image or label folder is searched for; Slicer writes a
# labelmap in any of them too.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
# Slicer segmentations: named, coloured segments on one grid. The core writes the first.
SEGMENTATION_SUFFIX = ".seg.nrrd"
SEGMENTATION_SUFFIXES = (SEGMENTATION_SUFFIX, ".seg.nhdr")
# Labelmaps as the core's own writer writes them (write_labelmap), a part of IMAGE_SUFFIXES; in
# the order the messages list them.
LABELMAP_SUFFIXES = (".nrrd", ".nii", ".nii.gz")
# DICOM Segmentation objects (SEG), written when the image came from a DICOM series.
DICOM_SEG_SUFFIX = ".dcm"
