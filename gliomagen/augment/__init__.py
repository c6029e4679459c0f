"""Mask augmentation (``gliomagen augment``, notebook 03): new label maps from the training masks.

The paper's recipe (docs/method.md), per training mask and round:

1. flip left-right with probability ``augment.flip_p``. The left-right axis is read from the affine, never
   assumed to be an array index; the array is mirrored about the volume centre and the affine is kept, so
   the lesion moves to the other hemisphere in world space;
2. scale isotropically by ``s ~ U(scale_range)`` about the volume centre with nearest-neighbour
   interpolation (optionally composed with a small rotation about the centre and a smooth elastic
   deformation; all in one resampling so labels are interpolated once);
3. retry step 2 (up to ``max_retries`` attempts) until no non-background voxel lies on the volume border,
   i.e. the head is inside the volume; otherwise discard;
4. discard if any label of the source mask vanished.

Optionally (off in the paper profile) the lesion is first translated to another place inside the head.

Modules: :mod:`~gliomagen.augment.transforms` (the geometry), :mod:`~gliomagen.augment.recipe` (one mask,
one round), :mod:`~gliomagen.augment.stage` (the resumable stage over a run), :mod:`~gliomagen.augment.outputs`
(the files it writes and their readers), :mod:`~gliomagen.augment.plots` (notebook 03's figures),
:mod:`~gliomagen.augment.cli` (the verb).
"""
