"""DICOM export and read-back (highdicom, pydicom): images, tumour SEGs, TID 1500 reports.

- `study`: whose images these are (the input's patient and study, or made-up identifiers)
- `images`: a scan as a new image series (CT or secondary capture), labelled synthetic
- `seg`: a tumour mask as a DICOM Segmentation of its image series
- `sr`: tumour sizes as a TID 1500 measurement report referencing the segments
- `export`: all of them into one folder, atomically
- `read`: a SEG as a labels scan, an SR's measurements

Plain I/O: no torch, no model-family registry; what a family answers (the modality of its
values, its display window, what its size is) is passed in. docs/dicom.md describes the
objects and attributes.
"""

from .export import ExportItem, write_dicom_export
from .images import SeriesText
from .read import (describe_measurements, dicom_object_kind, read_measurements,
                   read_segmentation)
from .sr import LesionMeasurement
from .study import Study, dicom_source_file, study_of

__all__ = ["ExportItem", "LesionMeasurement", "SeriesText", "Study", "describe_measurements",
           "dicom_object_kind", "dicom_source_file", "read_measurements",
           "read_segmentation", "study_of", "write_dicom_export"]
