"""nacsim: counterfactual follow-up images for cancer treatment response, in napari.

Layers (each imports only those below it):
    core     scans, scan I/O, clinical schema, cohort manifests (no torch, no Qt)
    science  phantoms, preprocessing, measurement, generative models, nnU-Net (no Qt)
    engine   the what-if service: sessions, cohort review, results (no Qt)
    plugin   the napari face: reader, writer, sample data, workspace, inspector
    cli      the `nacsim` command-line face
"""

import os

# OpenMP threads that wait by spinning make torch on a laptop that is busy with something
# else many times slower (measured: the demo's generation took 90 s instead of 3 s beside
# another job); sleeping waits cost nothing measurable when the machine is free. Read by
# OpenMP when torch first loads it, so it is set before any torch import; a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
