"""Synthetic patients: the embedded default data of nacsim, and the data of every test.

A phantom patient is a pure function of ``(cohort_seed, index)``: its anatomy, nuisances
(misalignment, noise, bias field) and latent response draws are fixed by the seed, and
`render` draws it under its own clinical values or under any other scenario. Rendering the
same patient under a scenario it did not have is the counterfactual ground truth that the
evaluation scores generated images against.

A model family says how its phantoms are made (``ModelFamily.make_phantom`` in
`napari_nacsim.families`); ``make_patient(name, cohort_seed, index)`` asks it.
"""

from __future__ import annotations

from .base import PhantomPatient, Rendering, make_patient, patient_seed  # noqa: F401
