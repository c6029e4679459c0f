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

CPU facts (DESIGN.md): ``nnUNet_n_proc_DA`` must be set (0 = single-threaded augmentation),
``nnUNet_def_n_proc=1`` and one fingerprint/preprocessing worker are enough at smoke size.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gliomagen.config import MODALITIES, Config
from gliomagen.io import read_json, write_json
from gliomagen.segmentation.export import EXPORT_MARKER, FILE_ENDING, DatasetPlan, dataset_dir

log = logging.getLogger(__name__)

TRAINER_DIR = Path(__file__).resolve().parent / "trainers"
CONFIGURABLE_TRAINER = "nnUNetTrainerGliomaGen"
PLANS = "nnUNetPlans"
PREPROCESS_MARKER = "gliomagen_preprocessed.json"


class NnUNetError(RuntimeError):
    """An nnU-Net step failed; the message names the log file and shows its last lines."""


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

    Raises:
        NnUNetError: the worker failed (message has the log path and its tail).
    """
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
        proc = subprocess.run(
            [sys.executable, "-m", "gliomagen.segmentation.nnunet", str(job_path)],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise NnUNetError(
            f"nnU-Net failed for configuration {job['name']!r} (exit code {proc.returncode}); "
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
    for key, entry in dataset.items():
        preprocessor.run_case_save(
            str(out / key), entry["images"], entry["label"], plans_manager, conf, dataset_json
        )
        shutil.copyfile(entry["label"], gt_dir / f"{key}{dataset_json['file_ending']}")
    print(f"preprocessed {len(dataset)} cases of {job['dataset_name']} in-process", flush=True)


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
    """Train fold ``all`` unless ``checkpoint_final.pth`` exists; continue from ``checkpoint_latest``."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    fold_dir = Path(job["model_dir"]) / "fold_all"
    if (fold_dir / "checkpoint_final.pth").is_file():
        return False
    resume = (fold_dir / "checkpoint_latest.pth").is_file()
    trainer = get_trainer_from_args(
        str(job["dataset_id"]),
        job["configuration"],
        "all",
        job["trainer"],
        job["plans"],
        resume,
        device=torch.device(job["device"]),
    )
    maybe_load_checkpoint(trainer, resume, False, None)
    trainer.run_training()
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
    """Entry point of the per-configuration process: run the job's steps and record their timings."""
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
