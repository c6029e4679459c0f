"""Fidelity of generated volumes (stage 5, notebook 05): MS-SSIM, SSIM, PSNR, FID, KID and FRD.

* :mod:`~gliomagen.fidelity.evaluate` -- the stage: ``run_fidelity(cfg)`` (metrics + mask-following
  measures, under the run lock) and ``evaluate(cfg)`` (the metrics).
* :mod:`~gliomagen.fidelity.outputs` -- the files the stage writes (``FidelityOutputs``), the typed content
  of its results (``FidelityResults``) and the readers other stages and notebooks use.
* :mod:`~gliomagen.fidelity.cli` -- ``gliomagen fidelity`` and ``gliomagen fetch-weights``.
* :mod:`~gliomagen.fidelity.pairs` -- the inputs: validation cases and the volumes generated from their masks.
* :mod:`~gliomagen.fidelity.subjects` -- per-pair measurements (slice MS-SSIM, 3D metrics, cached features).
* :mod:`~gliomagen.fidelity.rows` -- the results table's row schema, seeds and the paper's mean row.
* :mod:`~gliomagen.fidelity.synthetic` -- synthetic-vs-real rows (paper and corrected definitions).
* :mod:`~gliomagen.fidelity.floor` -- real-vs-real rows (the floor of every corrected metric).
* :mod:`~gliomagen.fidelity.metrics` -- the metric math (MONAI for (MS-)SSIM/PSNR; FID/KID).
* :mod:`~gliomagen.fidelity.features` -- slice feature extractors (registry) and the weight fetcher.
* :mod:`~gliomagen.fidelity.frd` -- the Fréchet Radiomics Distance via ``frd-score``.
* :mod:`~gliomagen.fidelity.conditioning` -- does a generated volume follow its mask?
* :mod:`~gliomagen.fidelity.report` -- tables in the paper's layout; :mod:`~gliomagen.fidelity.plots` -- figures.
"""
