"""nacsim: counterfactual follow-up images for cancer treatment response, in napari.

Floors, low to high; each answers to the floors below it and imports nothing above (nor
does a face import the other face). Where a lower floor needs a family's answer, it is
handed down as an argument (a `FamilySchema`, a `ModelInput`, a family's ``make_phantom``),
never looked up from below. tests/test_floors.py keeps this list and the imports true;
docs/architecture.md walks through it.

    core      scans, scan I/O, clinical schemas and their registry, cohort manifests, model
              input specs (no torch, no Qt)
    science   phantoms, preprocessing, measurement, generative models, nnU-Net (no Qt)
    families  the model-family registry: what differs between breast, lung and your own
    datasets  where a family meets phantoms, cohort manifests and preprocessing: paired
              cohorts, segmentation cases, phantom cohorts on disk
    engine    the what-if service: sessions, cohort review, results (no Qt)
    cli       the `nacsim` command-line face
    plugin    the napari face: reader, writer, sample data, workspace, inspector
"""

import os

# OpenMP threads that wait by spinning make torch on a laptop that is busy with something
# else many times slower (measured: the demo's generation took 90 s instead of 3 s beside
# another job); sleeping waits cost nothing measurable when the machine is free. Read by
# OpenMP when torch first loads it, so it is set before any torch import; a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
