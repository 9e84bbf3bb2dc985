"""Synthetic patients: the embedded default data of nacsim, and the data of every test.

A phantom patient is a pure function of ``(cohort_seed, index)``: its anatomy, nuisances
(misalignment, noise, bias field) and latent response draws are fixed by the seed, and
`render` draws it under its own clinical values or under any other scenario. Rendering the
same patient under a scenario it did not have is the counterfactual ground truth that the
evaluation scores generated images against.

Each family's phantoms have their own module (`breast`, `lung`, each with a
``make_patient(cohort_seed, index)``); a model family hands its own out
(``ModelFamily.make_phantom`` in `napari_nacsim.families`), and code above the registry asks
the family, never this package, which phantom belongs to a name.
"""

from __future__ import annotations

from .base import PhantomPatient, Rendering, patient_seed  # noqa: F401
