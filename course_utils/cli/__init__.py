"""The course's programs: each regenerates an artefact that ships with the repository (``python -m
course_utils.cli.<name>``) and is a thin ``main()`` over library functions.

- ``train_teacher``, ``train_lm_teacher``: the shipped teachers, their model cards (and caches);
- ``build_corpus``: notebook 08's corpus;
- ``kd_sweep``, ``transfer_sweep``, ``feature_sweep``, ``schedule_sweep``, ``export_sweep``, ``lm_sweep``: the
  precomputed sweeps in ``results/`` that notebooks 02-08 read;
- ``results``: ``make results`` (every notebook in quick and default mode, their figures, the README block).

Nothing in the library or the notebooks imports this subpackage.
"""
