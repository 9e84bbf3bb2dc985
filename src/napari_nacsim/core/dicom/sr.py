"""Tumour sizes as a DICOM Structured Report: a TID 1500 Measurement Report (highdicom).

One measurement group per measured image (the input and every generated follow-up), each
referencing its segment in its SEG (which references the image it was made from):

- TID 1410 *Planar* ROI measurements on a 2D image (a MIP: the SEG's one frame), TID 1411
  *Volumetric* ROI measurements on a volume (a CT crop: the whole segment);
- tracking identifier ("T2 · pCR (SYNTHETIC) tumour") and UID, time point, finding
  "Neoplasm", the algorithm (nnU-Net) that drew the mask;
- measurements: **Area** (mm²) or **Volume** (mL) and **Long axis** (the longest diameter,
  mm); on follow-ups the change against the baseline in percent for both (local codes
  ``99NACSIM``, declared in the Coding Scheme Identification Sequence: DICOM has no code
  for "percent change from baseline"), and where a response category is given (RECIST 1.1
  on CT volumes) the category as a qualitative evaluation "Current Response" with the
  group's method "RECIST 1.1".

The document is marked PARTIAL and UNVERIFIED: no clinician has read it, and the follow-up
images it measures are synthetic.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from ... import __version__
from .images import MANUFACTURER, ascii_text
from .seg import TUMOUR_SEGMENT as SEGMENT

LOCAL_SCHEME = "99NACSIM"
RESPONSES = ("CR", "PR", "SD", "PD")


@dataclasses.dataclass(frozen=True)
class LesionMeasurement:
    """The sizes of one segmented tumour, as plain numbers (the SR's content)."""

    tracking: str                     # "T2 · pCR (SYNTHETIC) tumour"
    time_point: str                   # "T2"
    size: float                       # area (mm²) on a 2D image, volume (mL) on a volume
    diameter_mm: float                # longest diameter
    size_change_percent: Optional[float] = None      # vs the baseline (follow-ups)
    diameter_change_percent: Optional[float] = None
    response: Optional[str] = None    # RECIST 1.1 category: CR, PR, SD or PD


def _codes():
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    return {
        "area": (codes.SCT.Area, codes.UCUM.SquareMillimeter),
        "volume": (codes.SCT.Volume, Code("mL", "UCUM", "milliliter")),
        "diameter": (codes.SCT.LongAxis, codes.UCUM.Millimeter),
        "size_change": (Code("SIZECHG", LOCAL_SCHEME, "Size change from baseline"),
                        codes.UCUM.Percent),
        "diameter_change": (Code("AXISCHG", LOCAL_SCHEME, "Long axis change from baseline"),
                            codes.UCUM.Percent),
        "response": codes.DCM.CurrentResponse,
        "responses": {"CR": codes.DCM.TargetLesionCompleteResponse,
                      "PR": codes.DCM.TargetLesionPartialResponse,
                      "SD": codes.DCM.TargetLesionStableDisease,
                      "PD": codes.DCM.TargetLesionProgressiveDisease},
        "recist": codes.DCM.RECIST1Point1,
    }


def measurement_report(lesions: Sequence[tuple[LesionMeasurement, object, bool]],
                       evidence: Sequence,
                       *, series_uid: str, series_number: int, sop_uid: str,
                       description: str, algorithm: str, algorithm_version: str):
    """The SR document: one group per (measurement, SEG dataset, planar) in ``lesions``
    (planar: the SEG is of one 2D image); ``evidence`` holds every image and SEG instance
    the groups reference."""
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    code = _codes()
    algorithm_id = hd.sr.AlgorithmIdentification(name=algorithm[:64],
                                                  version=algorithm_version[:64])
    groups = []
    for lesion, seg, planar in lesions:
        kind = "area" if planar else "volume"
        measurements = [_measure(code[kind], lesion.size, algorithm_id),
                        _measure(code["diameter"], lesion.diameter_mm, algorithm_id)]
        if lesion.size_change_percent is not None:
            measurements.append(_measure(code["size_change"], lesion.size_change_percent,
                                         algorithm_id))
        if lesion.diameter_change_percent is not None:
            measurements.append(_measure(code["diameter_change"],
                                         lesion.diameter_change_percent, algorithm_id))
        evaluations = []
        if lesion.response is not None:
            if lesion.response not in RESPONSES:
                raise ValueError(f"unknown response category {lesion.response!r}")
            evaluations.append(hd.sr.QualitativeEvaluation(
                name=code["response"], value=code["responses"][lesion.response]))
        common = dict(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=generate_uid(), identifier=ascii_text(lesion.tracking)[:64]),
            time_point_context=hd.sr.TimePointContext(time_point=lesion.time_point),
            finding_type=codes.SCT.Neoplasm,
            finding_category=codes.SCT.MorphologicallyAbnormalStructure,
            algorithm_id=algorithm_id,
            method=code["recist"] if lesion.response is not None else None,
            measurements=measurements,
            qualitative_evaluations=evaluations or None)
        # The references are built from the SEG's source images directly: highdicom's
        # `from_segmentation` looks for the segment in per-frame groups, where a one-frame
        # SEG does not keep it (it is in the shared groups).
        sources = [hd.sr.SourceImageForSegmentation(str(ref.ReferencedSOPClassUID),
                                                    str(ref.ReferencedSOPInstanceUID))
                   for ref in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
        if planar:
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=hd.sr.ReferencedSegmentationFrame(
                    sop_class_uid=str(seg.SOPClassUID),
                    sop_instance_uid=str(seg.SOPInstanceUID), frame_number=1,
                    segment_number=SEGMENT, source_image=sources[0]), **common))
        else:
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=str(seg.SOPClassUID),
                    sop_instance_uid=str(seg.SOPInstanceUID), segment_number=SEGMENT,
                    source_images=sources), **common))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="nacsim", manufacturer_name=MANUFACTURER,
            model_name=f"nacsim {__version__}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence), content=report[0],
        series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER,
        is_complete=False, is_final=False, is_verified=False,
        series_description=ascii_text(description)[:64],
        coding_schemes=[CodingSchemeIdentificationItem(
            designator=LOCAL_SCHEME, name="nacsim local codes",
            responsible_organization="nacsim")])
    _frame_or_segment(sr)
    return sr


def _frame_or_segment(dataset) -> None:
    """A reference to a SEG frame names the frame, not also its segment: highdicom writes
    both into a planar group's Referenced Segmentation Frame, where the SOP Instance
    Reference macro (PS3.3 C.17.3) allows Referenced Segment Number only for a reference to
    a whole segment (dciodvfy: "shall not be present when ReferencedFrameNumber is
    present"). The frame's segment is in the SEG (one segment here)."""
    for item in dataset.get("ContentSequence", []):
        for ref in item.get("ReferencedSOPSequence", []):
            if "ReferencedFrameNumber" in ref and "ReferencedSegmentNumber" in ref:
                del ref.ReferencedSegmentNumber
        _frame_or_segment(item)


def _measure(named, value: float, algorithm_id):
    import highdicom as hd

    name, unit = named
    return hd.sr.Measurement(name=name, value=float(value), unit=unit,
                             algorithm_id=algorithm_id)
