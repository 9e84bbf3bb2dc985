"""nacsim: counterfactual follow-up images for cancer treatment response, in napari.

Layers (each imports only those below it):
    core     scans, scan I/O, clinical schema, cohort manifests (no torch, no Qt)
    science  phantoms, preprocessing, measurement (no Qt, no napari)
    plugin   the napari face: reader, writer, sample data
    cli      the `nacsim` command-line face
"""

__version__ = "0.1.0"
