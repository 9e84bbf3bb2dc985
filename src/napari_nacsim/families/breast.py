"""The breast family: NAC simulation on DCE-MRI subtraction MIPs (seed paper 000).

Model input: the normalised 2D subtraction MIP (first post-contrast minus pre-contrast,
axial maximum-intensity projection, [0, 1] by the baseline's window), follow-ups registered
to the baseline with ANTs and put on its intensity scale. Tumour size: area in mm² of the
mask on the MIP (the paper's measure) and its longest diameter.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..core.scan import IMAGE, Scan
from ..core.schema import BREAST
from .base import ModelFamily, ModelInput, SegmentationSpec, Visits, WindowPreset

MIP_INPUT = ModelInput(
    ndim=2,
    what="a 2D breast subtraction MIP normalised to [0, 1]",
    how_to_make="make it from the pre- and post-contrast volumes with `nacsim mip --pre PRE "
                "--post POST` (or, in the workspace, 'Open a cohort patient…')",
    value_range=(0.0, 1.0),
    display_range=(0.0, 1.0),
    channel="MIP",
    short_name="MIP",
    value_unit="intensity 0–1",
)


class BreastFamily(ModelFamily):
    name = BREAST.name
    schema = BREAST
    model_input = MIP_INPUT
    segmenter_input = MIP_INPUT
    segmentation = SegmentationSpec(dataset_id=501, dataset_name="NacsimBreastMIP",
                                    configuration="2d", lesion_free=True, input_size=128)
    size_bins = (0.0, 100.0, 250.0, float("inf"))   # mm² on the MIP
    bundled_generator = "breast_nac"
    bundled_segmenter = BREAST.name
    sample_channel = "post"
    # MIPs are stored in LPS display layout (see preprocess.breast.axial_mip): anterior up,
    # the patient's right on the left of the screen.
    orientation = ("A", "P", "R", "L")
    training_data = ("synthetic phantom patients (nacsim phantoms breast), preprocessed "
                     "with breast_mips")
    window_presets = (WindowPreset("MIP", level=0.5, width=1.0),)  # the whole [0, 1] range
    normalisation = ("subtraction MIP (first post-contrast - pre-contrast), axial, LPS "
                     "layout; [0, 1] by the baseline's 0.5-99.5 percentile window "
                     "(follow-ups on the baseline's window); resized to image_size")

    def make_phantom(self, cohort_seed: int, index: int) -> Any:
        from ..science.phantoms import breast

        return breast.make_patient(int(cohort_seed), int(index))

    def model_inputs(self, visits: Visits, *, size: Optional[int] = None
                     ) -> dict[str, dict[str, Scan]]:
        from ..science.preprocess.pipeline import breast_mips

        return {tp: {("image" if key == "mip" else key): scan for key, scan in entry.items()}
                for tp, entry in breast_mips(visits, size=size).items()}

    def resample(self, scan: Scan, grid: Sequence[int]) -> Scan:
        from ..science.preprocess.breast import resize_square

        size = int(grid[-1])
        out = resize_square(scan, size)
        if scan.kind != IMAGE:
            return out
        # follow-ups on the baseline's window may overshoot [0, 1] slightly
        return Scan(array=np.clip(out.array, 0.0, 1.0).astype(np.float32), affine=out.affine,
                    kind=IMAGE, provenance=out.provenance)

    def body_mask(self, image: Scan) -> Optional[np.ndarray]:
        """The breasts and chest on a subtraction MIP: brighter than the air around them
        (triangle threshold of the smoothed image, which finds the foot of the dark air
        peak), the largest region with its holes filled, grown by two pixels."""
        from scipy import ndimage
        from skimage.filters import threshold_triangle

        array = np.asarray(image.array, np.float32)
        if array.ndim != 2 or not np.isfinite(array).all() or np.ptp(array) == 0:
            return None
        smooth = ndimage.gaussian_filter(array, 1.5)
        labelled, n = ndimage.label(smooth > threshold_triangle(smooth))
        if n == 0:
            return None
        largest = np.argmax(np.bincount(labelled.ravel())[1:]) + 1
        body = ndimage.binary_fill_holes(labelled == largest)
        return ndimage.binary_dilation(body, iterations=2)

    def to_model_grid(self, image: Scan, grid: Sequence[int]) -> Scan:
        from ..science.preprocess.breast import resize_square

        self.check_model_input(image)
        if tuple(image.shape) == tuple(grid):
            return image
        return resize_square(image, int(grid[-1]))
