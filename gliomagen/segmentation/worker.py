"""The per-configuration nnU-Net process: plan, preprocess, train and predict with nnunetv2's own APIs.

Started by :func:`gliomagen.segmentation.nnunet.run_job` as ``python -m gliomagen.segmentation.worker
job.json``: nnU-Net reads its folders from environment variables, spawns worker pools and holds large
buffers, so a fresh process per configuration keeps the runs independent, lets six configurations run on six
GPUs or as a job array, and gives each its own log (``<run>/logs/nnunet_<name>.log``).

The worker uses the real nnU-Net pipeline: ``extract_fingerprints`` -> ``plan_experiments`` ->
``preprocess`` -> trainer (``run_training`` building blocks) -> ``nnUNetPredictor``. Every step is
resumable: preprocessing is skipped when its marker matches the exported dataset, a training with
``checkpoint_final.pth`` is not retrained (one with ``checkpoint_latest.pth`` continues), and only missing
predictions are made (into a scratch folder first, then renamed, so no half-written prediction is kept).

CPU facts (docs/machine.md): ``nnUNet_n_proc_DA`` must be set (0 = single-threaded augmentation),
``nnUNet_def_n_proc=1`` and one fingerprint/preprocessing worker are enough at smoke size.

Every ``torch.load`` in this process is guarded (:mod:`gliomagen.segmentation.checkpoints`); the process
dies with its parent (:mod:`gliomagen.locks`), so a killed ``segment`` leaves no trainer behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gliomagen.config import MODALITIES
from gliomagen.errors import InputError
from gliomagen.io import read_json, write_json
from gliomagen.locks import die_with_parent, install_group_killer, parent_from_env
from gliomagen.segmentation.checkpoints import (
    REFUSED,
    REFUSED_EXIT,
    SHA_SUFFIX,
    guarded_torch_load,
    record_checkpoint,
    verify_checkpoint,
)
from gliomagen.segmentation.export import EXPORT_MARKER, FILE_ENDING

log = logging.getLogger(__name__)

PLANS = "nnUNetPlans"
PREPROCESS_MARKER = "gliomagen_preprocessed.json"
#: cases each extra nnU-Net process must have to pay for its start: nnU-Net *spawns* its pools, and every
#: spawned process imports torch and nnU-Net again (measured 5-15 s on the busy 2-core CPU), while a smoke
#: case takes well under a second; below this many cases per process the work runs in this process
CASES_PER_PROCESS = 50


def pool_size(workers: int, n_cases: int) -> int:
    """nnU-Net processes for ``n_cases``: ``workers`` at most, one per :data:`CASES_PER_PROCESS` cases."""
    return max(1, min(workers, n_cases // CASES_PER_PROCESS))


class _InlineResult:
    def __init__(self, value: Any) -> None:
        self._value = value

    def ready(self) -> bool:
        return True

    def get(self, timeout: float | None = None) -> Any:
        return self._value


class _InlineWorker:
    def is_alive(self) -> bool:
        return True


class _InlinePool:
    """The part of ``multiprocessing.Pool`` nnU-Net's fingerprint and integrity check use, run in this process."""

    def __init__(self, processes: int | None = None) -> None:
        self._pool = [_InlineWorker()]

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def starmap(self, fn: Any, iterable: Any) -> list[Any]:
        return [fn(*args) for args in iterable]

    def starmap_async(self, fn: Any, iterable: Any) -> _InlineResult:
        return _InlineResult(self.starmap(fn, iterable))


class _InlineMultiprocessing:
    """Stands in for the ``multiprocessing`` module inside nnU-Net's planning modules (one process)."""

    class _Context:
        Pool = _InlinePool

    @classmethod
    def get_context(cls, method: str | None = None) -> type[_Context]:
        return cls._Context


@contextlib.contextmanager
def _pools_inline() -> Iterator[None]:
    """nnU-Net's fingerprint extraction, dataset check and case listing without their process pools.

    The first two always open a spawn pool, even for one process; the case listing
    (``get_filenames_of_train_images_and_targets``) opens a *fork* pool of 12, which in this process (torch
    and its threads already loaded) once deadlocked a smoke run (two forked children waiting on a lock
    forever; a smoke run hung the same way in ``move_plans_between_datasets``, which lists the target
    dataset's files through it). Here their tasks run in this process instead (the same functions on the
    same arguments, in order).
    """
    from nnunetv2.experiment_planning import verify_dataset_integrity
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.utilities import utils

    modules = (verify_dataset_integrity, fingerprint_extractor)
    before = [m.multiprocessing for m in modules]
    pool_before = utils.Pool
    for m in modules:
        m.multiprocessing = _InlineMultiprocessing
    utils.Pool = _InlinePool
    try:
        yield
    finally:
        for m, original in zip(modules, before, strict=True):
            m.multiprocessing = original
        utils.Pool = pool_before


def _preprocess(job: dict[str, Any]) -> bool:
    """Fingerprint, plan and preprocess unless done for this exact export. Returns whether it ran."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    export = read_json(Path(job["raw_dir"]) / EXPORT_MARKER)
    pre_dir = Path(job["env"]["nnUNet_preprocessed"]) / job["dataset_name"]
    marker = pre_dir / PREPROCESS_MARKER
    wanted = {"export": export, "configuration": job["configuration"], "feature_scale": job["feature_scale"]}
    if marker.is_file() and {k: v for k, v in read_json(marker).items() if k != "plans_from"} == wanted:
        return False
    if pre_dir.exists():
        shutil.rmtree(pre_dir)  # the export changed: stale plans and data must not be reused
    n = pool_size(job["processes"], int(export["n_real"]) + int(export["n_synthetic"]))
    # the planner calls torch.set_num_threads(nnUNet_n_proc_DA), which rejects 0 (single-threaded training)
    da = job["env"]["nnUNet_n_proc_DA"]
    os.environ["nnUNet_n_proc_DA"] = str(max(1, int(da)))  # noqa: SIM112 -- nnU-Net's own name
    source = job.get("plans_from")
    if source:
        # nnU-Net's plan transfer lists the dataset's files through the same fork pool: inline it too
        with _pools_inline():
            _reuse_plans(job, source, pre_dir)
    else:
        with _pools_inline() if n == 1 else contextlib.nullcontext():
            extract_fingerprints(
                [job["dataset_id"]], num_processes=n, check_dataset_integrity=True, clean=True, verbose=False
            )
        plan_experiments([job["dataset_id"]])
        scale_features(pre_dir / f"{PLANS}.json", job["configuration"], job["feature_scale"])
    if n > 1:
        preprocess([job["dataset_id"]], PLANS, [job["configuration"]], [n], verbose=False)
    else:
        _preprocess_sequential(job)
    os.environ["nnUNet_n_proc_DA"] = da  # noqa: SIM112
    write_json(marker, {**wanted, "plans_from": source})
    return True


def _preprocess_sequential(job: dict[str, Any]) -> None:
    """nnU-Net's ``DefaultPreprocessor.run`` without its process pool, for one worker.

    Why: ``preprocessor.run`` always spawns a pool, and each spawned process imports torch and nnU-Net
    again (measured ~15 s on the busy 2-core CPU, i.e. most of a smoke configuration's preprocessing). The
    same per-case call (``run_case_save``) runs here in-process; the ground-truth copy mirrors
    ``plan_and_preprocess_api.preprocess_dataset``.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    raw = Path(job["raw_dir"])
    pre_dir = Path(job["env"]["nnUNet_preprocessed"]) / job["dataset_name"]
    plans_manager = PlansManager(str(pre_dir / f"{PLANS}.json"))
    conf = plans_manager.get_configuration(job["configuration"])
    dataset_json = read_json(pre_dir / "dataset.json")
    out = pre_dir / conf.data_identifier
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    gt_dir = pre_dir / "gt_segmentations"
    gt_dir.mkdir(exist_ok=True)
    preprocessor = conf.preprocessor_class(verbose=False)
    with _pools_inline():
        dataset = get_filenames_of_train_images_and_targets(str(raw), dataset_json)
    source = job.get("plans_from")
    shared = pre_dir.parent / source / conf.data_identifier if source else None
    reused = 0
    for key, entry in dataset.items():
        if source and shared is not None and _reuse_preprocessed_case(job, source, shared, out, key, entry):
            reused += 1
        else:
            preprocessor.run_case_save(
                str(out / key), entry["images"], entry["label"], plans_manager, conf, dataset_json
            )
        shutil.copyfile(entry["label"], gt_dir / f"{key}{dataset_json['file_ending']}")
    write_json(pre_dir / "gliomagen_reused_cases.json", {"source": source, "reused": reused})
    print(
        f"preprocessed {len(dataset) - reused} cases of {job['dataset_name']} in-process, "
        f"reused {reused} identical ones from {source}",
        flush=True,
    )


def _reuse_preprocessed_case(
    job: dict[str, Any], source: str, shared: Path, out: Path, key: str, entry: dict[str, Any]
) -> bool:
    """Hard-link case ``key``'s preprocessed files from dataset ``source`` when its inputs are identical.

    Why: with shared plans (``segment.shared_plans``) the same real scan is preprocessed identically for
    every configuration; linking saves its preprocessing in all but the first. Identical means: every image
    channel is the very same file (exports hard-link them) and the label files have the same bytes.
    """
    files = [shared / f"{key}.b2nd", shared / f"{key}_seg.b2nd", shared / f"{key}.pkl"]
    src_raw = Path(job["raw_dir"]).parent / source
    src_images = [src_raw / "imagesTr" / Path(p).name for p in entry["images"]]
    src_label = src_raw / "labelsTr" / Path(entry["label"]).name
    if not all(f.is_file() for f in [*files, *src_images, src_label]):
        return False
    same = all(os.path.samefile(a, b) for a, b in zip(entry["images"], src_images, strict=True))
    if not same or Path(entry["label"]).read_bytes() != src_label.read_bytes():
        return False
    for f in files:
        os.link(f, out / f.name)
    return True


def _reuse_plans(job: dict[str, Any], source: str, pre_dir: Path) -> None:
    """Take the plans of dataset ``source`` (nnU-Net's own ``move_plans_between_datasets``)."""
    from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import (
        move_plans_between_datasets,
    )

    if not (pre_dir.parent / source / f"{PLANS}.json").is_file():
        raise FileNotFoundError(f"shared plans requested from {source}, but it has not been planned yet")
    pre_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(job["raw_dir"]) / "dataset.json", pre_dir / "dataset.json")
    # the trainer archives the fingerprint next to the model: keep the one the plans were made from
    shutil.copyfile(
        pre_dir.parent / source / "dataset_fingerprint.json", pre_dir / "dataset_fingerprint.json"
    )
    move_plans_between_datasets(source, job["dataset_name"], PLANS, PLANS)


def scale_features(plans_file: Path, configuration: str, scale: float) -> None:
    """Multiply the planned U-Net's ``features_per_stage`` by ``scale`` (at least 4 per stage).

    nnU-Net's plans are meant to be edited; the smoke profile uses this to make the planned network tiny
    enough for a CPU while keeping nnU-Net's topology, patch size and training pipeline.
    """
    if scale == 1.0:
        return
    plans = read_json(plans_file)
    arch = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [max(4, round(f * scale)) for f in arch["features_per_stage"]]
    write_json(plans_file, plans)


def _train(job: dict[str, Any]) -> bool:
    """Train fold ``all`` unless ``checkpoint_final.pth`` exists; continue from ``checkpoint_latest.pth``.

    The checkpoint is loaded by nnU-Net's own ``trainer.load_checkpoint`` (its epoch counter, optimiser,
    logger and best-EMA state), whose ``torch.load`` is the guarded one in this process. The new
    ``checkpoint_final.pth`` gets its sha256 record (:func:`record_checkpoint`).
    """
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    fold_dir = Path(job["model_dir"]) / "fold_all"
    final = fold_dir / "checkpoint_final.pth"
    if final.is_file():
        return False
    latest = fold_dir / "checkpoint_latest.pth"
    resume = latest.is_file()
    trainer = get_trainer_from_args(
        str(job["dataset_id"]),
        job["configuration"],
        "all",
        job["trainer"],
        job["plans"],
        resume,
        device=torch.device(job["device"]),
    )
    if resume:
        trainer.load_checkpoint(str(latest))
        print(f"gliomagen: resuming {job['name']} from {latest} at epoch {trainer.current_epoch}", flush=True)
    trainer.run_training()
    if final.is_file() and not verify_checkpoint(final):
        record_checkpoint(final)  # a trainer without gliomagen's save_checkpoint: record it now
    for stale in (latest.with_name(latest.name + SHA_SUFFIX),):
        if not latest.is_file() and stale.is_file():
            stale.unlink()  # nnU-Net deletes checkpoint_latest.pth at the end; its record goes too
    if job["final_validation"]:
        trainer.perform_actual_validation(False)
    return True


def _predict(job: dict[str, Any], source: Path, out: Path) -> int:
    """Predict every case of ``source`` (``<case>_000k.nii.gz``) that has no prediction in ``out`` yet."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    n_ch = len(MODALITIES)
    cases = sorted({p.name[: -len(f"_0000{FILE_ENDING}")] for p in source.glob(f"*_0000{FILE_ENDING}")})
    todo = [c for c in cases if not (out / f"{c}{FILE_ENDING}").is_file()]
    if not todo:
        return 0
    scratch = out.parent / f".{out.name}.partial"
    if scratch.exists():
        shutil.rmtree(scratch)  # a crashed run may have left half-written files
    scratch.mkdir(parents=True)
    device = torch.device(job["device"])
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=job["tta"],
        perform_everything_on_device=device.type != "cpu",
        device=device,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(job["model_dir"], ("all",), "checkpoint_final.pth")
    inputs = [[str(source / f"{c}_{k:04d}{FILE_ENDING}") for k in range(n_ch)] for c in todo]
    outputs = [str(scratch / c) for c in todo]
    n = pool_size(job["processes"], len(todo))
    if n == 1:
        predictor.predict_from_files_sequential(inputs, outputs, save_probabilities=False, overwrite=True)
    else:
        predictor.predict_from_files(
            inputs,
            outputs,
            save_probabilities=False,
            overwrite=True,
            num_processes_preprocessing=n,
            num_processes_segmentation_export=n,
        )
    out.mkdir(parents=True, exist_ok=True)
    for c in todo:
        os.replace(scratch / f"{c}{FILE_ENDING}", out / f"{c}{FILE_ENDING}")
    shutil.rmtree(scratch)
    return len(todo)


def worker(job_path: str) -> None:
    """Entry point of the per-configuration process: run the job's steps and record their timings.

    Dies with its parent and takes its own worker processes with it; every ``torch.load`` in this process
    is guarded (:func:`guarded_torch_load`); a refused file ends it with exit code 2 and one
    ``GLIOMAGEN-REFUSED:`` line.
    """
    die_with_parent(parent_from_env())
    install_group_killer()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with guarded_torch_load():
            _work(job_path)
    except InputError as exc:
        print(f"{REFUSED} {exc}", flush=True)
        sys.exit(REFUSED_EXIT)


def _work(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    os.environ.update(job["env"])
    timing: dict[str, Any] = {"name": job["name"], "device": job["device"]}
    if job["train"]:
        t0 = time.perf_counter()
        timing["preprocessed"] = _preprocess(job)
        timing["plan_preprocess_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        timing["trained"] = _train(job)
        timing["train_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    timing["predicted"] = sum(_predict(job, Path(p["input"]), Path(p["output"])) for p in job["predict"])
    timing["predict_s"] = round(time.perf_counter() - t0, 2)
    write_json(Path(job["model_dir"]).parent / f"gliomagen_timing_{job['name']}.json", timing)
    print(f"gliomagen job {job['name']} done: {timing}", flush=True)


if __name__ == "__main__":  # pragma: no cover -- exercised through run_job
    worker(sys.argv[1])
