"""Blinded reader study (visual Turing test, notebook 08): build an offline kit for readers, score answers.

``gliomagen reader-study build`` writes the kit (a static page with PNG panels, to be given to readers as it
is) and the organiser's answer key beside it; ``gliomagen reader-study score`` reads the readers' exported
answer files and writes the scores (file names: :mod:`gliomagen.reader_study.outputs`).

Modules: :mod:`~.pairs` (real/synthetic pairs and their candidate slices), :mod:`~.design` (the blinded,
balanced design), :mod:`~.render` (panels as PNG), :mod:`~.build` (the kit, under the run lock),
:mod:`~.answers` (answer files), :mod:`~.score` (statistics), :mod:`~.simulate` (seeded simulated readers),
:mod:`~.plots` (notebook 08's figures), :mod:`~.outputs` (file names and readers), :mod:`~.cli` (the verb).
"""
