"""Fidelity of generated volumes (stage 5, notebook 05): MS-SSIM, SSIM, PSNR, FID, KID and FRD.

* :mod:`gliomagen.fidelity.metrics` -- the metric math (MONAI for (MS-)SSIM/PSNR; FID/KID/bootstrap).
* :mod:`gliomagen.fidelity.features` -- slice feature extractors (registry) and the weight fetcher.
* :mod:`gliomagen.fidelity.frd` -- the Fréchet Radiomics Distance via ``frd-score``.
* :mod:`gliomagen.fidelity.evaluate` -- the stage: ``evaluate(cfg)`` and ``gliomagen fidelity``.
* :mod:`gliomagen.fidelity.report` -- tables in the paper's layout and figures for the notebooks.
"""
