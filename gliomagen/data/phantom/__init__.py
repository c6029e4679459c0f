"""The built-in BraTS-layout phantom: a *synthetic* dataset, not patient data.

Students and CI have no BraTS access, so the smoke profile runs on folders laid out exactly like BraTS 2024
post-treatment glioma (``BraTS-GLI-<patient>-<timepoint>/<id>-{t1n,t1c,t2w,t2f,seg}.nii.gz``):

* **Anatomy** (:mod:`~gliomagen.data.phantom.anatomy`) is real: nilearn's bundled MNI152 2009 template (T1,
  grey- and white-matter probability maps; CSF = brain mask - GM - WM), warped per patient by a small random
  affine and a smooth random displacement field, sampled onto a BraTS-like LAS grid (the MNI152 182x218x182
  1 mm grid, or the same field of view on a coarser grid).
* **Contrasts** (:mod:`~gliomagen.data.phantom.contrast`) come from per-tissue intensities: t1n WM > GM > CSF;
  t1c as t1n plus an enhancing rim; t2w CSF > GM > WM; t2f (FLAIR) with CSF suppressed and oedema bright;
  then a smooth bias field, Rician noise, skull-stripped background (0) and an integer scale per scan, as in
  real data.
* **Lesions** (:mod:`~gliomagen.data.phantom.lesion`) are irregular post-treatment glioma with the BraTS
  labels 1 NETC, 2 SNFH, 3 ET, 4 RC (resection cavity, fluid-like on every contrast); size, place and shape
  vary; some scans lack a label. Patients have 1..``max_timepoints`` scans sharing anatomy and lesion site;
  the lesion changes a little.
* ``faults=True`` appends malformed cases (:data:`~gliomagen.data.phantom.faults.FAULTS`) that exercise
  validation and QC.

Everything is deterministic for a seed (each patient has its own random stream, so the result does not
depend on the number of workers). :func:`~gliomagen.data.phantom.generator.make_phantom` writes the dataset
(the phantom is the data stage's raw input, so it declares no run outputs of its own);
:mod:`gliomagen.data.cli` has the ``gliomagen phantom`` verb.
"""

from __future__ import annotations

from gliomagen.data.phantom.anatomy import BRATS_GRID, grid_affine
from gliomagen.data.phantom.faults import FAULTS
from gliomagen.data.phantom.generator import PhantomSummary, is_phantom, make_phantom

__all__ = ["BRATS_GRID", "FAULTS", "PhantomSummary", "grid_affine", "is_phantom", "make_phantom"]
