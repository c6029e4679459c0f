"""Generation: masks to four-modality volumes (``gliomagen generate``) and the sampler sweep.

- :mod:`~gliomagen.generation.jobs`: which masks, their seeds and shards;
- :mod:`~gliomagen.generation.sampling`: the loaded model and sampler, one batched call;
- :mod:`~gliomagen.generation.stage`: the resumable, shardable stage and its CLI;
- :mod:`~gliomagen.generation.outputs`: every file the stage writes, and their readers;
- :mod:`~gliomagen.generation.timing`, :mod:`~gliomagen.generation.plots`: notebook 04's table and figures;
- :mod:`~gliomagen.generation.sweep`: quality and speed against network evaluations (issue 18);
  :mod:`~gliomagen.generation.sweep_metrics`: its re-segmentation Dice and radiomics FID with the floor.
"""
