"""A tumour mask as a DICOM Segmentation (highdicom) of the image series it was made from.

One binary segment, "Tumour" (SNOMED CT: morphologically abnormal structure / neoplasm),
made by an automatic algorithm (nnU-Net, named with its version). highdicom takes the
frame of reference, the plane positions and the references to the source images from the
image instances, so the SEG lies on them in every viewer that overlays segmentations.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ... import __version__
from ..scan import Scan
from .images import MANUFACTURER, ascii_text

TUMOUR_SEGMENT = 1


def tumour_segmentation(mask: Scan, source_images: Sequence, *, series_uid: str,
                        series_number: int, sop_uid: str, description: str,
                        algorithm: str, algorithm_version: str):
    """The SEG of ``mask`` (on the grid of ``source_images``, in their slice order)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    pixels = np.asarray(mask.array) > 0
    if mask.ndim == 2:
        pixels = pixels[None]
    segment = hd.seg.SegmentDescription(
        segment_number=TUMOUR_SEGMENT,
        segment_label="Tumour",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm[:64], version=algorithm_version[:64],
            family=codes.cid7162.ArtificialIntelligence),
    )
    description = ascii_text(description)
    seg = hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=pixels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid, instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name="nacsim",
        software_versions=__version__, device_serial_number="none",
        content_label="TUMOUR",
        content_description=description[:64],
        series_description=description[:64],
        omit_empty_frames=False,   # one frame per source slice: simple to read anywhere
    )
    return seg
