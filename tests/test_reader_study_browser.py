"""End to end in a real headless browser: a reader answers every panel of the kit from file://, the
answers survive a reload, the reader goes back and changes one, exports CSV and JSON, and the scorer reads
both exports back.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``) and playwright from PyPI; playwright's own browser download is not used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reader_study_toy import TUMOUR_VALUES, write_toy_pairs

from gliomagen.config import ReaderStudyConfig
from gliomagen.reader_study.answers import read_all_answers, read_answers
from gliomagen.reader_study.build import KitResult, build_kit
from gliomagen.reader_study.outputs import read_key
from gliomagen.reader_study.score import score_readings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COMMENT = 'odd edge, "too smooth"'

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent: apt-get install -y chromium chromium-driver to run the browser test",
    ),
]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> KitResult:
    real, synth = write_toy_pairs(tmp_path_factory.mktemp("pairs"), n_cases=4)
    rs = ReaderStudyConfig(image_size=96)
    return build_kit(real, synth, tmp_path_factory.mktemp("study"), rs, TUMOUR_VALUES)


def _plan(position: int) -> tuple[str, int]:
    """The answer and rating the test gives at a position (a fixed, mixed pattern)."""
    return ("synthetic" if position % 3 == 0 else "real"), position % 5 + 1


def _answer_all(page, n: int, use_keyboard: bool, reload_at: int | None = None) -> None:
    for pos in range(1, n + 1):
        assert page.inner_text("#panel-number") == f"Panel {pos} of {n}"
        answer, rating = _plan(pos)
        if use_keyboard or pos % 2:
            page.keyboard.press("s" if answer == "synthetic" else "r")
            page.keyboard.press(str(rating))
        else:
            page.click(f"#answer-{answer}")
            page.click(f'button.rating[data-rating="{rating}"]')
        if pos == 2:
            page.keyboard.press("c")  # focuses the comment box; typed keys are text, not shortcuts
            page.keyboard.type(COMMENT)
            page.keyboard.press("Escape")
        assert page.inner_text("#progress-text") == f"{pos} / {n} answered"
        if pos == reload_at:
            page.reload()  # nothing is lost: same panel, same answers
            assert page.inner_text("#panel-number") == f"Panel {pos} of {n}"
            assert page.inner_text("#progress-text") == f"{pos} / {n} answered"
            assert page.get_attribute(f"#answer-{answer}", "aria-pressed") == "true"
        page.keyboard.press("ArrowRight")


def _export(page, button: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.click(button)
    download = info.value
    path = folder / download.suggested_filename
    download.save_as(path)
    return path


def test_reader_completes_the_study_in_a_real_browser(kit: KitResult, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    key = read_key(kit.key_path)
    n = kit.panels
    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1366, "height": 768})
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type in {"error", "warning"} else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto((kit.kit_dir / "index.html").as_uri())
            assert page.inner_text("#n-panels") == str(n)
            page.fill("#reader-input", "Dr Test")
            page.press("#reader-input", "Enter")

            page.keyboard.press("ArrowRight")  # no answer yet: the page stays and says why
            assert page.inner_text("#panel-number") == f"Panel 1 of {n}"
            assert "real or synthetic" in page.inner_text("#status")

            _answer_all(page, n, use_keyboard=False, reload_at=5)
            assert page.is_visible("#done-view") and "all 40 panels" in page.inner_text("#done-text")

            # back to the last panel, change its answer, and finish again
            page.keyboard.press("ArrowLeft")
            assert page.inner_text("#panel-number") == f"Panel {n} of {n}"
            last_answer, _ = _plan(n)
            changed = "real" if last_answer == "synthetic" else "synthetic"
            page.keyboard.press(changed[0])
            page.keyboard.press("1")
            page.keyboard.press("ArrowRight")
            page.screenshot(path=str(tmp_path / "done.png"))
            csv_path = _export(page, "#export-csv", tmp_path)
            json_path = _export(page, "#export-json", tmp_path)
            assert "Saved reader-study_" in page.inner_text("#export-status")

            # a second reader, with a fresh browser profile, answers by keyboard only
            other = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 720})
            page2 = other.new_page()
            page2.goto((kit.kit_dir / "index.html").as_uri())
            page2.fill("#reader-input", "Reader Two")
            page2.click("#start-button")
            _answer_all(page2, n, use_keyboard=True)
            second = _export(page2, "#export-json", tmp_path)
        finally:
            browser.close()

    # offline: every request stayed inside the kit folder (downloads are blob: URLs of the page itself)
    kit_uri = kit.kit_dir.as_uri()
    assert requests and all(u.startswith(kit_uri) or u.startswith("blob:") for u in requests), requests
    assert problems == []  # no script error, no blocked resource (the page's CSP would log one)

    assert csv_path.name == f"reader-study_{kit.kit_id}_Dr_Test.csv" and json_path.suffix == ".json"
    exported = json.loads(json_path.read_text())
    assert exported["complete"] is True and exported["n_panels"] == n
    assert exported["reader"] == "Dr Test" and exported["kit_id"] == kit.kit_id
    expected = {}
    for entry in exported["answers"]:
        answer, rating = _plan(entry["position"])
        if entry["position"] == n:
            answer, rating = changed, 1
        expected[entry["panel_id"]] = (answer, rating)
        assert (entry["answer"], entry["rating"]) == (answer, rating), entry
        assert entry["seconds"] >= 0
    assert sorted(expected) == sorted(key["panel_id"])
    comments = [e["comment"] for e in exported["answers"] if e["comment"]]
    assert comments == [COMMENT]

    # the scorer reads both exports back, identically
    from_csv = read_answers(csv_path, key).drop(columns="file").sort_values("panel_id", ignore_index=True)
    from_json = read_answers(json_path, key).drop(columns="file").sort_values("panel_id", ignore_index=True)
    assert from_csv[["panel_id", "answer", "rating", "comment"]].equals(
        from_json[["panel_id", "answer", "rating", "comment"]]
    )
    result = score_readings(read_all_answers([json_path, second], key), key)
    overall = result.detection[result.detection["stratum"] == "overall"].set_index("reader")
    truth = dict(zip(key["panel_id"], key["truth"], strict=True))
    correct = sum(expected[p][0] == truth[p] for p in truth)
    assert overall.loc["Dr Test", "accuracy"] == pytest.approx(correct / n)
    assert result.agreement["method"] == "cohen" and result.agreement["readers"] == 2

    # each reader saw the panels in an own order
    order_two = [e["panel_id"] for e in json.loads(second.read_text())["answers"]]
    assert order_two != [e["panel_id"] for e in exported["answers"]]
