"""Where a model family meets phantoms, cohort manifests and preprocessing: the data that
training, evaluation and the cohort tools read.

This floor sits above the family registry (it asks a family for its phantoms, its
preprocessing and its model grid) and below the engine and the faces. The science below
keeps only plain data and maths (`science.generative.data.PairedCohort`,
`science.segmentation.dataset.Case` and the nnU-Net export), handed a family's answers as
arguments.

- `paired`              paired cohorts for the generative models (``phantom_cohort``,
                        ``manifest_cohort``), prepared phantom patients cached as ``.npz``
- `segmentation_cases`  nnU-Net training cases (``phantom_cases``, ``cohort_cases``)
- `phantom_cohort`      a family's phantoms written as a cohort manifest
                        (``write_phantom_cohort``), and the phantom behind a manifest's
                        patient (``phantom_of``)
- `parallel`            ``map_jobs``: one job per patient in spawned worker processes,
                        with progress (every preparation above uses it)

Worker processes are handed a family's name and look it up once, in the worker; everywhere
else the family object is passed on.
"""
