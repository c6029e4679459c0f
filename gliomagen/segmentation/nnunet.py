"""Plan, preprocess, train and predict one configuration with nnunetv2's own Python APIs.

Each configuration runs in **its own process** (``python -m gliomagen.segmentation.nnunet job.json``):
nnU-Net reads its folders from environment variables, spawns worker pools and holds large buffers, so a
fresh process per configuration keeps the runs independent, lets six configurations run on six GPUs or as
a job array, and gives each its own log (``<run>/logs/nnunet_<name>.log``).

The worker uses the real nnU-Net pipeline: ``extract_fingerprints`` -> ``plan_experiments`` ->
``preprocess`` -> trainer (``run_training`` building blocks) -> ``nnUNetPredictor``. Every step is
resumable: preprocessing is skipped when its marker matches the exported dataset, a training with
``checkpoint_final.pth`` is not retrained (one with ``checkpoint_latest.pth`` continues), and only missing
predictions are made (into a scratch folder first, then renamed, so no half-written prediction is kept).

CPU facts (docs/machine.md): ``nnUNet_n_proc_DA`` must be set (0 = single-threaded augmentation),
``nnUNet_def_n_proc=1`` and one fingerprint/preprocessing worker are enough at smoke size.

Safety (issue 13): nnunetv2 2.8 loads its checkpoints with ``torch.load(weights_only=False)``, which runs
any code a forged ``.pth`` pickles. The worker process replaces ``torch.load`` for *every* caller in it
(predictor, trainer resume, pretrained weights) with :func:`load_checkpoint_safely`: ``weights_only=True``
with only numpy scalar/dtype classes allow-listed (what nnU-Net stores besides tensors, plain containers and
``torch.device``), and, where gliomagen recorded the file's sha256 when it was written
(``<file>.sha256.json``, see :func:`record_checkpoint`), the bytes must match it. A refusal ends the worker
with exit code 2 and one line naming the file, which ``gliomagen segment`` reports as its own exit-2 error.
The worker dies with its parent (:mod:`gliomagen.locks`), so a killed ``segment`` leaves no trainer behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gliomagen.config import MODALITIES, Config
from gliomagen.errors import InputError, UnsafeFileError
from gliomagen.io import file_sha256, read_json, write_json
from gliomagen.locks import die_with_parent, install_group_killer, parent_from_env, run_child, run_lock
from gliomagen.segmentation.export import EXPORT_MARKER, FILE_ENDING, DatasetPlan, dataset_dir

log = logging.getLogger(__name__)

TRAINER_DIR = Path(__file__).resolve().parent / "trainers"
CONFIGURABLE_TRAINER = "nnUNetTrainerGliomaGen"
PLANS = "nnUNetPlans"
PREPROCESS_MARKER = "gliomagen_preprocessed.json"
#: suffix of the record gliomagen writes beside every nnU-Net checkpoint it produced
SHA_SUFFIX = ".sha256.json"
#: first word of the line a worker prints when it refuses a file (read back by :func:`run_job`)
REFUSED = "GLIOMAGEN-REFUSED:"
REFUSED_EXIT = 2


class NnUNetError(RuntimeError):
    """An nnU-Net step failed; the message names the log file and shows its last lines."""


class CheckpointRefused(UnsafeFileError):
    """An nnU-Net checkpoint was not loaded: it could run code, is corrupted, or differs from its record."""


# ------------------------------------------------------------------------------------- safe checkpoints
def safe_globals() -> list[Any]:
    """The non-tensor classes nnU-Net 2.8 checkpoints hold, all plain data (nothing that can run code).

    Measured on a checkpoint of ``nnUNetTrainer`` (``torch.serialization.get_unsafe_globals_in_checkpoint``
    plus the dtype classes it needs): numpy scalars (the logger's losses/Dice, ``_best_ema``) are pickled as
    ``numpy._core.multiarray.scalar(dtype, bytes)``. ``torch.device`` (``init_args``) is allowed by torch.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    numeric = [
        getattr(np.dtypes, name)
        for name in dir(np.dtypes)
        if name.endswith("DType") and any(k in name for k in ("Int", "Float", "Bool", "Complex"))
    ]
    return [core.multiarray.scalar, np.dtype, *numeric]


def record_checkpoint(path: Path, sha256: str | None = None) -> None:
    """Record the sha256 of a checkpoint gliomagen wrote (``<path>.sha256.json``), keeping the previous one.

    The previous hash is kept because the record is written just *before* the checkpoint is renamed into
    place: a kill between the two leaves the old file, which must still verify.
    """
    record_path = path.with_name(path.name + SHA_SUFFIX)
    old = read_json(record_path).get("sha256") if record_path.is_file() else None
    new = sha256 or file_sha256(path)
    write_json(
        record_path,
        {"file": path.name, "sha256": new, "previous": old if old != new else None,
         "written": datetime.now(UTC).isoformat(timespec="seconds")},
    )  # fmt: skip


def verify_checkpoint(path: Path) -> bool:
    """Check ``path`` against its sha256 record; ``False`` if there is no record.

    Raises:
        CheckpointRefused: the file differs from what gliomagen wrote (modified or replaced).
    """
    record_path = path.with_name(path.name + SHA_SUFFIX)
    if not record_path.is_file():
        return False
    try:
        record = read_json(record_path)
    except (OSError, ValueError) as exc:
        raise CheckpointRefused(
            f"refused to load {path}: its sha256 record {record_path} is unreadable ({exc})"
        ) from None
    actual = file_sha256(path)
    if actual not in {record.get("sha256"), record.get("previous")}:
        raise CheckpointRefused(
            f"refused to load {path}: its sha256 {actual[:16]}... differs from the one gliomagen recorded when "
            f"it wrote the file ({record_path}); it was modified or replaced. Delete it (and the record) to "
            "retrain, or restore the original"
        )
    return True


def load_checkpoint_safely(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load`` that cannot run code: sha256 record check, then ``weights_only=True`` + :func:`safe_globals`.

    Raises:
        CheckpointRefused: the file holds other objects (possibly code), is unreadable, or fails its record.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointRefused(f"refused to load {path}: the file does not exist")
    if not verify_checkpoint(path):
        log.warning("%s has no sha256 record from gliomagen; loading it with weights_only=True only", path)
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.serialization.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = " ".join(line for line in str(exc).splitlines() if "got <" in line or "GLOBAL" in line)[:200]
        raise CheckpointRefused(
            f"refused to load {path}: it contains objects other than tensors and plain data (possibly unsafe)"
            + (f"; {detail.strip()}" if detail else "")
        ) from None
    except Exception as exc:  # noqa: BLE001 -- torch raises several types for truncated/corrupted archives
        first = (str(exc).splitlines() or [""])[0][:200]
        raise CheckpointRefused(
            f"refused to load {path}: it cannot be read ({type(exc).__name__}: {first}); it is truncated or "
            "corrupted (an nnU-Net killed while saving?): delete it to retrain from the previous checkpoint"
        ) from None


def _guarded_load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
    """Drop-in for ``torch.load`` inside the worker: paths go through :func:`load_checkpoint_safely`."""
    kwargs.pop("weights_only", None)
    if isinstance(f, (str, os.PathLike)) and not args and not kwargs:
        return load_checkpoint_safely(f, map_location)
    import torch

    with torch.serialization.safe_globals(safe_globals()):  # file objects / extra options: still weights only
        return torch.serialization.load(f, map_location, *args, weights_only=True, **kwargs)


@contextlib.contextmanager
def guarded_torch_load() -> Iterator[None]:
    """Within the block, every ``torch.load`` (nnU-Net's included) is :func:`_guarded_load`.

    ``torch.serialization.load`` (the same function as the original ``torch.load``) is left alone and is
    what the guard itself calls.
    """
    import torch

    before = torch.load
    torch.load = _guarded_load  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load = before


# ------------------------------------------------------------------------------------------------ setup
def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names pass through."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def trainer_name(cfg: Config) -> str:
    """The trainer class: ``nnUNetTrainer`` in the profile means nnU-Net's default trainer with the profile's
    epochs and iterations (:mod:`gliomagen.segmentation.trainers`); any other name is used as given."""
    return CONFIGURABLE_TRAINER if cfg.segment.trainer == "nnUNetTrainer" else cfg.segment.trainer


def nnunet_env(cfg: Config) -> dict[str, str]:
    """The environment variables nnU-Net needs for this run (folders under ``<run>/nnunet``)."""
    seg = cfg.segment
    root = cfg.paths.nnunet
    return {
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
        "nnUNet_n_proc_DA": str(seg.da_processes),
        "nnUNet_def_n_proc": str(seg.processes),
        "nnUNet_extTrainer": str(TRAINER_DIR),
        "GLIOMAGEN_NNUNET_EPOCHS": str(seg.epochs),
        "GLIOMAGEN_NNUNET_ITERATIONS": str(seg.iterations_per_epoch),
        "GLIOMAGEN_NNUNET_VAL_ITERATIONS": str(seg.val_iterations_per_epoch),
        "GLIOMAGEN_NNUNET_SEED": str(seg.seed),
        "GLIOMAGEN_NNUNET_SAVE_EVERY": str(seg.checkpoint_every),
        **(
            {"OMP_NUM_THREADS": str(seg.cpu_threads), "MKL_NUM_THREADS": str(seg.cpu_threads)}
            if seg.cpu_threads and resolve_device(seg.device) == "cpu"
            else {}
        ),
    }


def model_dir(cfg: Config, plan: DatasetPlan) -> Path:
    """nnU-Net's training output folder of a configuration (holds ``fold_all/``)."""
    return (
        cfg.paths.nnunet
        / "results"
        / plan.dataset_name
        / f"{trainer_name(cfg)}__{PLANS}__{cfg.segment.nnunet_configuration}"
    )


def is_trained(cfg: Config, plan: DatasetPlan) -> bool:
    return (model_dir(cfg, plan) / "fold_all" / "checkpoint_final.pth").is_file()


def prediction_dir(cfg: Config, name: str, target: str = "val") -> Path:
    """Where the predictions of configuration ``name`` on ``target`` (``val`` or ``hq``) are written."""
    return cfg.paths.nnunet / "predictions" / name / target


def make_job(
    cfg: Config,
    plan: DatasetPlan,
    predict: list[tuple[Path, Path]],
    train: bool = True,
    plans_from: str | None = None,
) -> dict[str, Any]:
    """Describe one configuration's work for the worker process.

    Args:
        cfg: run configuration.
        plan: the configuration's dataset plan (its dataset must be exported).
        predict: (input images folder, output folder) pairs to predict after training.
        train: plan, preprocess and train (``False``: only predict with an existing model).
        plans_from: dataset name whose nnU-Net plans are reused (``segment.shared_plans``).
    """
    seg = cfg.segment
    return {
        "name": plan.name,
        "dataset_id": plan.dataset_id,
        "dataset_name": plan.dataset_name,
        "raw_dir": str(dataset_dir(cfg, plan)),
        "configuration": seg.nnunet_configuration,
        "trainer": trainer_name(cfg),
        "plans": PLANS,
        "device": resolve_device(seg.device),
        "processes": seg.processes,
        "final_validation": seg.final_validation,
        "tta": seg.tta,
        "feature_scale": seg.feature_scale,
        "plans_from": plans_from,
        "train": train,
        "model_dir": str(model_dir(cfg, plan)),
        "predict": [{"input": str(i), "output": str(o)} for i, o in predict],
        "env": nnunet_env(cfg),
    }


def run_job(cfg: Config, job: dict[str, Any]) -> dict[str, Any]:
    """Run a job in a fresh Python process and return its timing record.

    The job holds the run folder's lock ``nnunet-<dataset>`` while it trains (one trainer per model folder);
    the process dies with this one (:func:`gliomagen.locks.run_child`).

    Raises:
        CheckpointRefused: the worker refused to load a checkpoint (exit code 2; the message names the file).
        NnUNetError: the worker failed otherwise (message has the log path and its tail).
        LockHeld: another process is training the same dataset.
    """
    key = f"nnunet-{job['dataset_name']}" if job["train"] else f"nnunet-{job['name']}-predict"
    with run_lock(cfg.paths.root, key):
        return _run_job_locked(cfg, job)


def _run_job_locked(cfg: Config, job: dict[str, Any]) -> dict[str, Any]:
    logs = cfg.paths.logs
    logs.mkdir(parents=True, exist_ok=True)
    job_path = cfg.paths.nnunet / "jobs" / f"{job['name']}.json"
    write_json(job_path, job)
    log_path = logs / f"nnunet_{job['name']}.log"
    env = {**os.environ, **job["env"]}
    t0 = time.perf_counter()
    with open(log_path, "a") as fh:
        fh.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} job {job_path}\n")
        fh.flush()
        returncode = run_child(
            [sys.executable, "-m", "gliomagen.segmentation.nnunet", str(job_path)], env, fh
        )
    if returncode == REFUSED_EXIT:
        refused = [
            line[len(REFUSED) :].strip()
            for line in log_path.read_text(errors="replace").splitlines()
            if line.startswith(REFUSED)
        ]
        if refused:
            raise CheckpointRefused(f"{refused[-1]} (nnU-Net job {job['name']!r}; log {log_path})")
    if returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise NnUNetError(
            f"nnU-Net failed for configuration {job['name']!r} (exit code {returncode}); "
            f"full log: {log_path}\n--- last lines ---\n{tail}"
        )
    timing_path = Path(job["model_dir"]).parent / f"gliomagen_timing_{job['name']}.json"
    timing = read_json(timing_path) if timing_path.is_file() else {}
    timing["total_s"] = round(time.perf_counter() - t0, 2)
    return timing


# ------------------------------------------------------------------------------------ worker (subprocess)
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
    n = job["processes"]
    # the planner calls torch.set_num_threads(nnUNet_n_proc_DA), which rejects 0 (single-threaded training)
    da = job["env"]["nnUNet_n_proc_DA"]
    os.environ["nnUNet_n_proc_DA"] = str(max(1, int(da)))  # noqa: SIM112 -- nnU-Net's own name
    source = job.get("plans_from")
    if source:
        _reuse_plans(job, source, pre_dir)
    else:
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
    dataset = get_filenames_of_train_images_and_targets(str(raw), dataset_json)
    source = job.get("plans_from")
    shared = pre_dir.parent / source / conf.data_identifier if source else None
    reused = 0
    for key, entry in dataset.items():
        if shared is not None and _reuse_preprocessed_case(job, source, shared, out, key, entry):
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
    if job["processes"] <= 1:
        predictor.predict_from_files_sequential(inputs, outputs, save_probabilities=False, overwrite=True)
    else:
        predictor.predict_from_files(
            inputs,
            outputs,
            save_probabilities=False,
            overwrite=True,
            num_processes_preprocessing=job["processes"],
            num_processes_segmentation_export=job["processes"],
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
