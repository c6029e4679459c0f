"""nnU-Net dataset export: label mapping, patient-level selection, the validation-leak guard, sizes, files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from seg_toy import make_toy_run

from gliomagen.config import MODALITIES, load_config
from gliomagen.segmentation import export as E


@pytest.fixture()
def toy(tmp_path):
    cfg = load_config("smoke", run_dir=tmp_path / "run")
    ids = make_toy_run(
        cfg, n_train_patients=4, timepoints=2, n_val_patients=2, n_synthetic=12, shape=(12, 12, 12)
    )
    return cfg, ids


def test_labels_with_and_without_head(tmp_path):
    cfg = load_config("smoke", run_dir=tmp_path)
    assert E.nnunet_labels(cfg) == {"background": 0, "head": 1, "NETC": 2, "SNFH": 3, "ET": 4, "RC": 5}
    cfg2 = load_config("smoke", ["segment.include_head=false"], run_dir=tmp_path)
    assert E.nnunet_labels(cfg2) == {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}
    prepared = np.array([0, 1, 2, 3, 4, 5], np.uint8)
    mapped = E.label_lut(cfg2)[prepared]
    np.testing.assert_array_equal(mapped, [0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(E.inverse_label_lut(cfg2)[mapped], [0, 0, 2, 3, 4, 5])  # head is gone


def test_select_real_keeps_patients_whole_and_is_seeded():
    cases = [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(1, 11) for t in range(1 + p % 3)]
    patients = {c: E.patient_of(c) for c in cases}
    half = E.select_real(cases, patients, 0.5, seed=3)
    assert half == E.select_real(cases, patients, 0.5, seed=3)
    assert len(half) >= round(0.5 * len(cases))
    chosen_patients = {patients[c] for c in half}
    assert all(c in half for c in cases if patients[c] in chosen_patients)  # no patient split
    assert E.select_real(cases, patients, 0.0, 0) == [] and E.select_real(cases, patients, 1.0, 0) == sorted(
        cases
    )


def test_leak_guard_rejects_validation_masks_and_patients():
    val = ["BraTS-GLI-00009-000"]
    patients = {
        "BraTS-GLI-00009-000": "00009",
        "BraTS-GLI-00009-001": "00009",
        "BraTS-GLI-00001-000": "00001",
    }
    ok = pd.DataFrame({"id": ["BraTS-GLI-00001-000-a1"], "source_id": ["BraTS-GLI-00001-000"]})
    E.assert_no_validation_leak(["BraTS-GLI-00001-000"], ok, val, patients)
    bad = pd.DataFrame({"id": ["BraTS-GLI-00009-000-a1"], "source_id": ["BraTS-GLI-00009-000"]})
    with pytest.raises(E.ValidationLeakError, match="generated from validation mask BraTS-GLI-00009-000"):
        E.assert_no_validation_leak([], bad, val, patients)
    sibling = pd.DataFrame({"id": ["BraTS-GLI-00009-001-a2"], "source_id": ["BraTS-GLI-00009-001"]})
    with pytest.raises(E.ValidationLeakError, match="validation patient 00009"):
        E.assert_no_validation_leak([], sibling, val, patients)
    with pytest.raises(E.ValidationLeakError, match="belongs to validation patient"):
        E.assert_no_validation_leak(["BraTS-GLI-00009-001"], ok.iloc[:0], val, patients)


def test_plan_refuses_synthetic_made_from_a_validation_mask(toy):
    cfg, ids = toy
    from gliomagen.cases import Case, write_case

    leak_id = f"{ids['val'][0]}-a1"
    mask = np.zeros((12, 12, 12), np.uint8)
    write_case(
        cfg.paths.synthetic / "train", Case(leak_id, np.zeros((4, 12, 12, 12), np.float32), mask, np.eye(4))
    )
    conf = cfg.segment.configurations[2]  # real + all synthetic
    with pytest.raises(E.ValidationLeakError, match=leak_id):
        E.plan_configuration(cfg, conf.model_copy(update={"synthetic": 13}))


def test_synthetic_pool_reads_only_train_and_checks_manifest(toy):
    cfg, ids = toy
    pool = E.synthetic_pool(cfg)
    assert list(pool["id"]) == sorted(ids["synthetic"], key=lambda i: (int(i.rsplit("-a", 1)[1]), i))
    assert set(pool["source_id"]) <= set(ids["train"])
    manifest = pd.read_csv(cfg.paths.synthetic / "manifest.csv")
    manifest.loc[0, "source_id"] = "BraTS-GLI-00077-000"
    manifest.to_csv(cfg.paths.synthetic / "manifest.csv", index=False)
    with pytest.raises(E.ExportError, match="manifest says source mask"):
        E.synthetic_pool(cfg)


def test_configuration_sizes_match_the_profile(toy):
    cfg, ids = toy
    hq = list(reversed(ids["synthetic"]))[: cfg.segment.hq_count]
    n_train = len(ids["train"])
    for conf in cfg.segment.configurations:
        plan = E.plan_configuration(cfg, conf, hq)
        assert len(plan.synthetic_ids) == conf.synthetic, conf.name
        expected_real = {1.0: n_train, 0.5: n_train // 2, 0.0: 0}[conf.real_fraction]
        assert len(plan.real_ids) == expected_real, conf.name  # 4 patients x 2 timepoints: half = 2 patients
        if conf.synthetic_pool == "hq":
            assert plan.synthetic_ids == hq[: conf.synthetic]
        assert not set(plan.training_ids) & set(ids["val"])
    one_round = E.plan_configuration(cfg, cfg.segment.configurations[1])
    assert all(i.endswith("-a1") for i in one_round.synthetic_ids)  # round 1 first (the paper's 1062)


def test_hq_configuration_needs_the_ranking(toy):
    cfg, _ = toy
    with pytest.raises(E.ExportError, match="high-quality ranking"):
        E.plan_configuration(cfg, cfg.segment.configurations[3])


def test_export_writes_a_valid_nnunet_dataset_and_skips_when_unchanged(toy):
    cfg, ids = toy
    plan = E.plan_configuration(cfg, cfg.segment.configurations[1])
    assert E.export_dataset(cfg, plan) is True
    out = E.dataset_dir(cfg, plan)
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["channel_names"] == {str(i): m for i, m in enumerate(MODALITIES)}
    assert ds["labels"] == E.nnunet_labels(cfg) and ds["numTraining"] == len(plan.training_ids)
    case = plan.synthetic_ids[0]
    src = nib.load(str(plan.synthetic_dirs[case] / f"{case}-t2w.nii.gz"))
    got = nib.load(str(out / "imagesTr" / f"{case}_0002.nii.gz"))  # channel 2 = t2w
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(src.dataobj))
    np.testing.assert_allclose(got.affine, src.affine)
    assert sorted(p.name for p in (out / "imagesTs").glob("*_0000.nii.gz")) == [
        f"{i}_0000.nii.gz" for i in ids["val"]
    ]
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(out), num_processes=1)  # nnU-Net's own checker raises on any problem
    assert E.export_dataset(cfg, plan) is False


def test_export_leaves_out_a_broken_case_and_names_it(toy):
    cfg, ids = toy
    bad = ids["train"][0]
    (cfg.paths.prepared / "train" / bad / f"{bad}-seg.nii.gz").write_bytes(b"not a nifti")
    plan = E.plan_configuration(cfg, cfg.segment.configurations[0])
    E.export_dataset(cfg, plan)
    out = E.dataset_dir(cfg, plan)
    record = json.loads((out / E.EXPORT_MARKER).read_text())
    assert list(record["skipped"]) == [bad] and "seg" in record["skipped"][bad]
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == len(ids["train"]) - 1
    assert not (out / "labelsTr" / f"{bad}.nii.gz").exists()


def test_segment_config_rejects_duplicate_or_unsafe_names(tmp_path):
    from gliomagen.config import ConfigError

    with pytest.raises(ConfigError, match="unique"):
        load_config("smoke", ["segment.configurations=[{name: a}, {name: a}]"], run_dir=tmp_path)
    with pytest.raises(ConfigError, match="name"):
        load_config("smoke", ["segment.configurations=[{name: 'a b'}]"], run_dir=tmp_path)


def test_identical_real_cases_share_their_preprocessing_between_configurations(toy):
    """With shared plans a real scan exported for two mixes is preprocessed once and hard-linked after."""
    import os

    from gliomagen.segmentation.worker import _reuse_preprocessed_case

    cfg, _ = toy
    confs = {c.name: c for c in cfg.segment.configurations}
    first = E.plan_configuration(cfg, confs["real_only"])
    E.export_dataset(cfg, first)
    mix = E.plan_configuration(cfg, confs["real_6syn"])
    E.export_dataset(cfg, mix)
    pre = cfg.paths.nnunet / "preprocessed"
    shared = pre / first.dataset_name / "nnUNetPlans_3d_fullres"
    shared.mkdir(parents=True)
    out = pre / mix.dataset_name / "nnUNetPlans_3d_fullres"
    out.mkdir(parents=True)
    case = first.real_ids[0]
    for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
        (shared / f"{case}{suffix}").write_bytes(b"preprocessed " + suffix.encode())
    raw = E.dataset_dir(cfg, mix)

    def entry(case_id: str) -> dict[str, object]:
        return {
            "images": [str(raw / "imagesTr" / f"{case_id}_{k:04d}.nii.gz") for k in range(len(MODALITIES))],
            "label": str(raw / "labelsTr" / f"{case_id}.nii.gz"),
        }

    job = {"raw_dir": str(raw)}
    assert _reuse_preprocessed_case(job, first.dataset_name, shared, out, case, entry(case))
    assert os.path.samefile(out / f"{case}.b2nd", shared / f"{case}.b2nd")
    # a synthetic case was never preprocessed for the real-only dataset: it is preprocessed, not linked
    syn = mix.synthetic_ids[0]
    assert not _reuse_preprocessed_case(job, first.dataset_name, shared, out, syn, entry(syn))
    # a label that differs from the source's (e.g. another label mapping) is never reused
    other = first.real_ids[1]
    for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
        (shared / f"{other}{suffix}").write_bytes(b"x")
    label = raw / "labelsTr" / f"{other}.nii.gz"
    label.write_bytes(label.read_bytes() + b"\0")
    assert not _reuse_preprocessed_case(job, first.dataset_name, shared, out, other, entry(other))
