"""The napari face of nacsim: reader, writer and sample data (see the top-level napari.yaml).

Thin adapters between `Scan` objects and napari layer data; all the work is in `core`
and `science`.
"""
