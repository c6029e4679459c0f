"""Reader study: kit design and blinding, rendering geometry, scoring against hand-computed values,
clear errors for bad answer files, the CLI and the notebook."""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reader_study_toy import AFFINE, TUMOUR_VALUES, toy_mask, write_run_layout, write_toy_pairs

from gliomagen.config import ReaderStudyConfig, load_config
from gliomagen.reader_study.answers import (
    ANSWER_FORMAT,
    AnswerFileError,
    read_all_answers,
    read_answers,
    write_answer_file,
)
from gliomagen.reader_study.build import KitError, build_kit
from gliomagen.reader_study.outputs import read_key
from gliomagen.reader_study.pairs import slice_candidates, to_ras
from gliomagen.reader_study.render import render_slice
from gliomagen.reader_study.score import agreement, fleiss_kappa, score_readings
from gliomagen.reader_study.simulate import write_simulated_readers

RS = ReaderStudyConfig(image_size=64)
HEX_ID = re.compile(r"^[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    return write_toy_pairs(tmp_path_factory.mktemp("pairs"), n_cases=4)


@pytest.fixture(scope="module")
def kit(pairs: tuple[list[Path], Path], tmp_path_factory: pytest.TempPathFactory):
    real, synth = pairs
    return build_kit(real, synth, tmp_path_factory.mktemp("study"), RS, TUMOUR_VALUES, "cfghash")


def _png_chunks(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        assert (
            zlib.crc32(kind + data[pos + 8 : pos + 8 + length])
            == struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        )
        chunks.append(kind.decode())
        pos += 12 + length
    return chunks


# ------------------------------------------------------------------------------------------- design
def test_classes_balanced_in_every_stratum(kit) -> None:
    key = read_key(kit.key_path)
    # 4 cases x 5 panel kinds x 2 locations, half of the cases real per location
    assert len(key) == kit.panels == 40
    counts = key.groupby(["kind", "location", "truth"]).size()
    assert len(counts) == 5 * 2 * 2 and set(counts) == {2}
    # a case is shown in one class only per location: no real/synthetic comparison of the same slice
    assert key.groupby(["case_id", "location"])["truth"].nunique().max() == 1


def test_kit_carries_no_answer_information(kit) -> None:
    key = read_key(kit.key_path)
    kit_dir = kit.kit_dir
    # the key and manifest are outside the folder given to readers
    assert kit.key_path.parent == kit_dir.parent and kit.manifest_path.parent == kit_dir.parent
    files = sorted(p.relative_to(kit_dir).as_posix() for p in kit_dir.rglob("*") if p.is_file())
    pngs = [f for f in files if f.startswith("img/")]
    assert sorted(set(files) - set(pngs)) == ["README.txt", "app.js", "index.html", "panels.js", "style.css"]
    assert all(HEX_ID.match(Path(f).stem) and f.endswith(".png") for f in pngs)
    # the page data holds ids, kinds and image names only, in an order unrelated to class
    page = json.loads(re.search(r"= (\{.*\});", (kit_dir / "panels.js").read_text(), re.S).group(1))
    for panel in page["panels"]:
        assert set(panel) == {"id", "kind", "label", "images"} and HEX_ID.match(panel["id"])
        assert all(set(im) == {"src", "label"} for im in panel["images"])
    assert [p["id"] for p in page["panels"]] == list(key["panel_id"])
    text = "\n".join((kit_dir / f).read_text() for f in files if f not in pngs)
    for case_id in key["case_id"]:
        assert case_id not in text and case_id.split("-")[2] not in text
    panel_text = json.dumps(page["panels"]).lower()
    for word in ("real", "synthetic", "lesion", "away", "truth", "slice", "case"):
        assert word not in panel_text
    for png in pngs:
        # pixels only: no tEXt/iTXt/zTXt/tIME/pHYs chunk that could carry a name, a path or a time
        assert _png_chunks(kit_dir / png) == ["IHDR", "IDAT", "IEND"]
        data = (kit_dir / png).read_bytes()
        assert b"BraTS" not in data and b"synthetic" not in data and b"real" not in data


def test_real_and_synthetic_panels_look_alike_on_disk(kit) -> None:
    """Same size, mode, bit depth and file size for both classes: only the pixels can tell them apart."""
    from PIL import Image

    key = read_key(kit.key_path)
    sizes = {}
    for _, row in key.iterrows():
        for name in row["images"].split():
            with Image.open(kit.kit_dir / "img" / name) as im:
                sizes.setdefault(row["truth"], set()).add((im.size, im.mode))
    assert sizes["real"] == sizes["synthetic"] and len(sizes["real"]) == 1
    # and the same number of bytes: a file listing sorted by size must not sort the panels by class
    assert len({p.stat().st_size for p in (kit.kit_dir / "img").iterdir()}) == 1


def test_build_is_deterministic_and_skips_when_up_to_date(kit, pairs, tmp_path: Path) -> None:
    real, synth = pairs
    again = build_kit(real, synth, tmp_path / "a", RS, TUMOUR_VALUES)
    assert again.kit_id == kit.kit_id
    assert (again.kit_dir / "panels.js").read_bytes() == (kit.kit_dir / "panels.js").read_bytes()
    assert pd.read_csv(again.key_path).equals(pd.read_csv(kit.key_path))
    for png in (kit.kit_dir / "img").iterdir():
        assert (again.kit_dir / "img" / png.name).read_bytes() == png.read_bytes()
    mtime = again.key_path.stat().st_mtime_ns
    assert build_kit(real, synth, tmp_path / "a", RS, TUMOUR_VALUES).rebuilt is False
    assert again.key_path.stat().st_mtime_ns == mtime
    other = build_kit(real, synth, tmp_path / "b", RS.model_copy(update={"seed": 1}), TUMOUR_VALUES)
    assert other.kit_id != kit.kit_id


def test_bad_case_skipped_and_odd_case_dropped(tmp_path: Path) -> None:
    real, synth = write_toy_pairs(tmp_path, n_cases=5)
    # break one synthetic volume: wrong shape -> that case is skipped with a named reason, the rest go on
    bad = synth / real[0].name / f"{real[0].name}-t2w.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.float32), np.eye(4)), str(bad))
    shutil.rmtree(synth / real[1].name)  # and one case has no synthetic counterpart at all
    # and one synthetic volume was generated from another mask than its real counterpart's
    nib.save(nib.Nifti1Image(toy_mask(0), AFFINE), str(synth / real[4].name / f"{real[4].name}-seg.nii.gz"))
    result = build_kit(real, synth, tmp_path / "study", RS, TUMOUR_VALUES)
    reasons = {r["case_id"]: r["reason"] for r in result.skipped_cases}
    assert "t2w.nii.gz: shape (5, 5, 5) differs" in reasons[real[0].name]
    assert "no complete synthetic volume" in reasons[real[1].name]
    assert "conditioning mask differs from the real mask" in reasons[real[4].name]
    key = read_key(result.key_path)
    assert set(key["case_id"]) == {real[2].name, real[3].name}
    assert set(key.groupby(["kind", "location", "truth"]).size()) == {1}

    three, synth3 = write_toy_pairs(tmp_path / "three", n_cases=3)
    capped = build_kit(
        three, synth3, tmp_path / "capped3", RS.model_copy(update={"max_cases": 2}), TUMOUR_VALUES
    )
    assert sum("not drawn: max_cases=2 of 3" in r["reason"] for r in capped.skipped_cases) == 1
    assert read_key(capped.key_path)["case_id"].nunique() == 2
    odd = build_kit(three, synth3, tmp_path / "study3", RS, TUMOUR_VALUES)
    assert sum("odd one out" in r["reason"] for r in odd.skipped_cases) == 2  # one per location
    assert set(read_key(odd.key_path).groupby(["kind", "location", "truth"]).size()) == {1}


def test_no_usable_pairs_is_a_clear_error(tmp_path: Path) -> None:
    real, _ = write_toy_pairs(tmp_path, n_cases=2)
    with pytest.raises(KitError, match="no panels could be drawn.*no complete synthetic volume"):
        build_kit(real, tmp_path / "nowhere", tmp_path / "study", RS, TUMOUR_VALUES)


def test_answers_are_never_orphaned(tmp_path: Path) -> None:
    real, synth = write_toy_pairs(tmp_path, n_cases=2)
    study = tmp_path / "study"
    first = build_kit(real, synth, study, RS, TUMOUR_VALUES)
    (study / "answers" / "reader1.csv").write_text("x\n")
    changed = RS.model_copy(update={"image_size": 80})
    with pytest.raises(KitError, match="already has answers.*--force"):
        build_kit(real, synth, study, changed, TUMOUR_VALUES)
    second = build_kit(real, synth, study, changed, TUMOUR_VALUES, force=True)
    archive = study / "archive" / first.kit_id
    assert (archive / "answers" / "reader1.csv").is_file() and (archive / "answer_key.csv").is_file()
    assert second.kit_id != first.kit_id and not list((study / "answers").iterdir())


# ----------------------------------------------------------------------------------------- geometry
def test_slice_candidates_hand_made_mask() -> None:
    mask = np.zeros((6, 6, 20), np.uint8)
    mask[:, :, 2:18] = 1  # head in slices 2..17, full 36-voxel cross-section
    mask[0:2, 0:2, 10] = 3  # tumour areas: z10 = 4, z11 = 9, z12 = 2
    mask[0:3, 0:3, 11] = 4
    mask[0:2, 0, 12] = 2
    rs = ReaderStudyConfig(lesion_min_fraction=0.4, away_margin_mm=6.0, head_min_fraction=0.5)
    got = slice_candidates(mask, 2.0, [2, 3, 4, 5], rs)
    assert got["lesion"] == [10, 11]  # 4 >= 0.4 * 9 and 9; 2 < 3.6
    # 6 mm at 2 mm = 3 slices from any tumour slice (10..12), inside the head: 2..7 and 15..17
    assert got["away"] == [2, 3, 4, 5, 6, 7, 15, 16, 17]


def test_reorientation_and_radiological_display() -> None:
    """A marker at the patient's right-anterior shows top-left in radiological, top-right in neurological."""
    vol = np.zeros((4, 6, 3), np.float32)
    vol[0, 5, 1] = 1.0  # LAS voxel x=0 is the patient's right side, y=5 anterior
    las = np.diag([-2.0, 2.0, 2.0, 1.0])
    ras, ras_affine = to_ras(vol, las)
    assert ras[3, 5, 1] == 1.0 and np.allclose(np.diag(ras_affine)[:3], [2, 2, 2])
    # the world position of the marker is unchanged by the reorientation
    assert np.allclose(las @ [0, 5, 1, 1], ras_affine @ [3, 5, 1, 1])
    radio = render_slice(ras, 1, (0.0, 1.0), (2.0, 2.0), 6, "radiological")
    neuro = render_slice(ras, 1, (0.0, 1.0), (2.0, 2.0), 6, "neurological")
    assert radio.shape == (6, 4)  # rows = y (anterior-posterior), columns = x; 12 mm x 8 mm at 1 px/mm
    assert radio[0, 0] == 255 and radio.sum() == 255
    assert neuro[0, 3] == 255 and neuro.sum() == 255


# ------------------------------------------------------------------------------------------ scoring
HAND_KEY = pd.DataFrame(
    {
        "kit_id": ["k1"] * 4,
        "panel_id": ["p1", "p2", "p3", "p4"],
        "truth": ["synthetic", "synthetic", "real", "real"],
        "kind": ["t1n", "t2f", "t1n", "t2f"],
        "location": ["lesion", "away", "lesion", "away"],
    }
)


def _payload(reader: str, calls: list[str], ratings: list[int], kit_id: str = "k1") -> dict:
    answers = [
        {"panel_id": p, "position": i + 1, "answer": a, "rating": r, "comment": "", "seconds": 2.5}
        for i, (p, a, r) in enumerate(zip(HAND_KEY["panel_id"], calls, ratings, strict=True))
    ]
    return {"format": ANSWER_FORMAT, "version": 1, "kit_id": kit_id, "reader": reader, "answers": answers}


@pytest.fixture
def hand_files(tmp_path: Path) -> list[Path]:
    a = write_answer_file(
        tmp_path / "a.json", _payload("A", ["synthetic", "real", "real", "real"], [2, 3, 5, 4])
    )
    b = write_answer_file(
        tmp_path / "b.csv", _payload("B", ["synthetic", "synthetic", "synthetic", "real"], [1, 2, 3, 5])
    )
    return [a, b]


def test_scores_match_hand_computation(hand_files: list[Path]) -> None:
    result = score_readings(read_all_answers(hand_files, HAND_KEY), HAND_KEY, 0.95)
    det = result.detection.set_index(["reader", "stratum"])
    a = det.loc[("A", "overall")]
    # A: TP p1, FN p2, TN p3 and p4
    assert (a["tp"], a["fn"], a["tn"], a["fp"]) == (1, 1, 2, 0)
    assert a["accuracy"] == 0.75 and a["sensitivity"] == 0.5 and a["specificity"] == 1.0
    # Wilson 95 % by hand: z = 1.959964; 3/4 -> (0.30064, 0.95441), 1/2 -> (0.09453, 0.90547),
    # 2/2 -> (0.34238, 1)
    assert a["accuracy_low"] == pytest.approx(0.30064, abs=1e-5)
    assert a["accuracy_high"] == pytest.approx(0.95441, abs=1e-5)
    assert a["sensitivity_low"] == pytest.approx(0.09453, abs=1e-5)
    assert a["sensitivity_high"] == pytest.approx(0.90547, abs=1e-5)
    assert a["specificity_low"] == pytest.approx(0.34238, abs=1e-5)
    assert a["specificity_high"] == pytest.approx(1.0)
    # exact two-sided binomial test of 3/4 against 1/2: P(X>=3) + P(X<=1) = 10/16
    assert a["p_chance"] == pytest.approx(0.625)
    t1n = det.loc[("A", "t1n")]
    assert (t1n["n"], t1n["accuracy"]) == (2, 1.0)
    pooled = det.loc[("all readers", "overall")]
    assert (pooled["tp"], pooled["fn"], pooled["tn"], pooled["fp"]) == (3, 1, 3, 1)
    assert list(det.loc["A"].index) == ["overall", "t1n", "t2f", "lesion", "away"]  # fixed order

    rat = result.ratings.set_index(["reader", "stratum"]).loc[("A", "overall")]
    assert rat["real_mean"] == 4.5 and rat["synthetic_mean"] == 2.5 and rat["difference"] == 2.0
    # exact Mann-Whitney: real {5, 4} above synthetic {2, 3} in every pair: U = 4, p = 2 / C(4, 2)
    assert rat["mannwhitney_p"] == pytest.approx(1 / 3)

    # Cohen's kappa, A = [S R R R], B = [S S S R]: po = 1/2, pe = .25*.75 + .75*.25 = .375 -> 0.2
    assert result.agreement["method"] == "cohen"
    assert result.agreement["kappa"] == pytest.approx(0.2)
    assert result.agreement["observed_agreement"] == 0.5


def test_fleiss_kappa_hand_example() -> None:
    # 4 panels x 3 readers, counts (real, synthetic): P_i = 1, 1, 1/3, 1/3 -> P_bar = 2/3; p_j = 1/2 -> P_e = 1/2
    assert fleiss_kappa(np.array([[0, 3], [3, 0], [1, 2], [2, 1]])) == pytest.approx(1 / 3)
    # Fleiss (1971) worked example (10 subjects, 14 raters, 5 categories): kappa = 0.210
    table = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[1, 2], [2, 2]]))


def test_three_readers_use_fleiss(tmp_path: Path) -> None:
    calls = [
        ["synthetic", "real", "real", "real"],
        ["synthetic", "synthetic", "synthetic", "real"],
        ["real", "synthetic", "real", "synthetic"],
    ]
    readings = pd.concat(
        [
            read_answers(write_answer_file(tmp_path / f"{r}.json", _payload(r, c, [3] * 4)), HAND_KEY)
            for r, c in zip("ABC", calls, strict=True)
        ]
    )
    got = agreement(readings)
    # per panel synthetic counts 2, 2, 1, 1 of 3 -> P_i = 1/3 each; p_synth = 1/2 -> kappa = (1/3 - 1/2) / (1/2)
    assert got["method"] == "fleiss" and got["kappa"] == pytest.approx(-1 / 3)


def test_csv_and_json_read_back_identically(tmp_path: Path) -> None:
    payload = _payload('Dr, "Quote"', ["synthetic", "real", "real", "real"], [2, 3, 5, 4])
    payload["answers"][0]["comment"] = 'blurry, "odd" edge\nsecond line'
    a = read_answers(write_answer_file(tmp_path / "x.csv", payload), HAND_KEY)
    b = read_answers(write_answer_file(tmp_path / "x.json", payload), HAND_KEY)
    pd.testing.assert_frame_equal(a.drop(columns="file"), b.drop(columns="file"))
    assert a["comment"].iloc[0] == 'blurry, "odd" edge\nsecond line' and a["reader"].iloc[0] == 'Dr, "Quote"'


def _corrupt(tmp_path: Path, case: str) -> Path:
    good = _payload("A", ["synthetic", "real", "real", "real"], [2, 3, 5, 4])
    if case == "not json":
        (tmp_path / "r.json").write_text('{"format": "gliomagen-reader-study-answers", "answers": [')
        return tmp_path / "r.json"
    if case == "empty":
        (tmp_path / "r.csv").write_text("")
        return tmp_path / "r.csv"
    if case == "other kit":
        return write_answer_file(tmp_path / "r.json", {**good, "kit_id": "zzz"})
    if case == "no reader":
        return write_answer_file(tmp_path / "r.json", {**good, "reader": " "})
    if case == "missing panel":
        return write_answer_file(tmp_path / "r.csv", {**good, "answers": good["answers"][:3]})
    if case == "unanswered":
        good["answers"][1]["answer"] = ""
        return write_answer_file(tmp_path / "r.json", good)
    if case == "duplicate":
        return write_answer_file(
            tmp_path / "r.json", {**good, "answers": good["answers"] + good["answers"][:1]}
        )
    if case == "unknown panel":
        good["answers"][0]["panel_id"] = "p9"
        return write_answer_file(tmp_path / "r.json", good)
    if case == "bad rating":
        good["answers"][2]["rating"] = 7
        return write_answer_file(tmp_path / "r.csv", good)
    if case == "bad answer":
        good["answers"][3]["answer"] = "maybe"
        return write_answer_file(tmp_path / "r.json", good)
    if case == "missing column":
        (tmp_path / "r.csv").write_text("kit_id,reader,panel_id,answer\nk1,A,p1,real\n")
        return tmp_path / "r.csv"
    if case == "wrong type":
        (tmp_path / "r.txt").write_text("hello")
        return tmp_path / "r.txt"
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not json", "not valid JSON"),
        ("empty", "the file is empty"),
        ("other kit", "answers are for kit 'zzz', but the key is for kit 'k1'"),
        ("no reader", "reader's name is missing"),
        ("missing panel", r"incomplete: 1 of 4 panels lack an answer or a rating \(p4\)"),
        ("unanswered", r"incomplete: 1 of 4 panels .*\(p2\)"),
        ("duplicate", "answered more than once: p1"),
        ("unknown panel", "not in the kit: p9"),
        ("bad rating", "entry 3 \\(panel p3\\): rating '7' is not an integer 1-5"),
        ("bad answer", "entry 4 \\(panel p4\\): answer 'maybe' is not real/synthetic"),
        ("missing column", r"missing CSV column\(s\) \['rating'\]"),
        ("wrong type", "unknown answer file type '.txt'"),
    ],
)
def test_corrupted_answer_file_gives_clear_error(tmp_path: Path, case: str, message: str) -> None:
    path = _corrupt(tmp_path, case)
    with pytest.raises(AnswerFileError, match=message) as info:
        read_answers(path, HAND_KEY)
    assert str(info.value).startswith(str(path))


def test_same_reader_twice_is_an_error(tmp_path: Path) -> None:
    p = _payload("A", ["real"] * 4, [3] * 4)
    files = [write_answer_file(tmp_path / "1.json", p), write_answer_file(tmp_path / "2.csv", p)]
    with pytest.raises(AnswerFileError, match="reader 'A' also answered in .*1.json"):
        read_all_answers(files, HAND_KEY)


# ------------------------------------------------------------------------------------ CLI, notebook
def test_cli_build_and_score_simulated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gliomagen.cli import main

    write_run_layout(tmp_path, n_cases=4)
    common = ["--run-dir", str(tmp_path), "--set", "reader_study.image_size=48"]
    assert main(["reader-study", "build", *common]) == 0
    assert "40 panels" in capsys.readouterr().out
    key = read_key(tmp_path / "reader_study" / "answer_key.csv")
    files = write_simulated_readers(
        key, tmp_path / "reader_study" / "answers", skills=(0.5, 0.9, 0.9), seed=3
    )
    assert main(["reader-study", "score", *common]) == 0
    out = capsys.readouterr().out
    assert "Fleiss' kappa, 3 readers" in out
    det = pd.read_csv(tmp_path / "metrics" / "reader_study_detection.csv")
    overall = det[det["stratum"] == "overall"].set_index("reader")
    # counts follow from the files independently of the scorer
    for f in files:
        data = json.loads(f.read_text())
        calls = {a["panel_id"]: a["answer"] for a in data["answers"]}
        correct = sum(calls[p] == t for p, t in zip(key["panel_id"], key["truth"], strict=True))
        assert overall.loc[data["reader"], "accuracy"] == pytest.approx(correct / len(key))
    summary = json.loads((tmp_path / "metrics" / "reader_study.json").read_text())
    assert summary["agreement"]["method"] == "fleiss" and summary["config_hash"]
    with pytest.raises(SystemExit, match="name an action"):
        main(["reader-study", *common])
    (files[0]).write_text("{broken")
    with pytest.raises(SystemExit, match="sim-reader-1.json: not valid JSON"):
        main(["reader-study", "score", *common])


@pytest.mark.slow
def test_notebook_08_runs(tmp_path: Path) -> None:
    """Notebook 08 on a toy run: simulated readers' scores never mix with real ones.

    The only execution of notebook 08 besides the end-to-end smoke run (tests/test_e2e_smoke.py runs every
    notebook; see test_notebook_08_is_executed_by_two_tests_only).
    """
    from gliomagen.paths import NOTEBOOK_DIR
    from gliomagen.runner import execute_notebook

    write_run_layout(tmp_path, n_cases=4)
    out = tmp_path / "08.ipynb"
    execute_notebook(
        NOTEBOOK_DIR / "08_reader_study.py",
        out,
        {"profile": "smoke", "overrides": ["reader_study.image_size=48"], "run_dir": str(tmp_path)},
    )
    assert (tmp_path / "metrics" / "reader_study_simulated_detection.csv").is_file()
    assert not (tmp_path / "metrics" / "reader_study_detection.csv").exists()  # simulated never mixes in
    assert "image/png" in out.read_text()


def test_config_rejects_bad_settings() -> None:
    from gliomagen.config import ConfigError

    with pytest.raises(ConfigError, match="reader_study.panels"):
        load_config("smoke", ["reader_study.panels=[t1n, t1n]"])
    with pytest.raises(ConfigError, match="reader_study.window_percentiles"):
        load_config("smoke", ["reader_study.window_percentiles=[99, 1]"])


def test_build_and_score_hold_the_run_lock(tmp_path: Path) -> None:
    from test_augment import lock_held_elsewhere

    from gliomagen.locks import LockHeld
    from gliomagen.reader_study.build import build

    write_run_layout(tmp_path, n_cases=4)
    cfg = load_config("smoke", ["reader_study.image_size=32"], run_dir=tmp_path)
    with lock_held_elsewhere(tmp_path, "reader-study"), pytest.raises(LockHeld, match="reader-study"):
        build(cfg)
    assert not (tmp_path / "reader_study" / "answer_key.csv").exists()
    assert build(cfg).panels == 40


def test_notebook_08_is_executed_by_two_tests_only() -> None:
    # test_e2e_smoke.py runs every notebook through run_notebooks; no other test names notebook 08
    from gliomagen.paths import PROJECT_ROOT

    tests = PROJECT_ROOT / "tests"
    naming_08 = sorted(p.name for p in tests.glob("test_*.py") if "08_reader_study" in p.read_text())
    assert naming_08 == ["test_reader_study.py"], naming_08
