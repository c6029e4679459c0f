"""Runs never mix: figures/tables live in their run folder, publishing refuses an incomplete run, and the
paper check refuses includes from two runs. Also the provenance inside PNG/PDF/tables and number formatting."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from gliomagen.config import load_config  # noqa: E402
from gliomagen.figures import export  # noqa: E402
from gliomagen.figures.outputs import run_figures_dir, run_tables_dir  # noqa: E402
from gliomagen.figures.publish import (  # noqa: E402
    PUBLISHED,
    _replace_folder,
    footer_text,
    include_provenance,
    provenance,
)
from gliomagen.paper import check_manuscript  # noqa: E402


def _snapshot(*folders: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_figures_on_an_empty_run_changes_nothing_published(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gliomagen.cli import main

    fig_pub, tab_pub = tmp_path / "figures" / "smoke", tmp_path / "generated" / "smoke"
    fig_pub.mkdir(parents=True)
    tab_pub.mkdir(parents=True)
    (fig_pub / "fig_unet.png").write_bytes(b"published figure of another run")
    (tab_pub / "numbers.tex").write_text("% published numbers of another run\n")
    before = _snapshot(fig_pub, tab_pub)
    empty = tmp_path / "empty-run"
    rc = main(
        [
            "figures",
            "--run-dir",
            str(empty),
            "--set",
            f"figures.figures_dir={fig_pub}",
            "--set",
            f"figures.tables_dir={tab_pub}",
        ]
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2
    assert last.startswith("gliomagen: run ") and "is incomplete" in last, last
    assert "stage 'prepare' is incomplete" in last, last
    assert _snapshot(fig_pub, tab_pub) == before  # nothing published changed
    # what could be made went into the run's own folders
    assert (empty / "figures" / "fig_unet.png").is_file()
    assert "n/a" in (empty / "paper_generated" / "numbers.tex").read_text()


def _manuscript(tmp_path: Path) -> Path:
    tex = tmp_path / "main.tex"
    tex.write_text(
        "\\input{profile}\n\\input{\\gendir/numbers}\n\\input{\\gendir/tab_a}\n"
        "\\includegraphics[width=2cm]{\\figdir/fig_a}\n\\includegraphics{\\figdir/fig_b}\n\\RProfile\n"
    )
    return tex


def _make_run_outputs(cfg) -> None:  # noqa: ANN001 -- a Config
    run = provenance(cfg)
    for name in ("fig_a", "fig_b"):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        export.save_figure(fig, run_figures_dir(cfg), name, ("png", "pdf"), 50, footer_text(cfg), run)
    export.write_table(
        pd.DataFrame({"a": [1.23456]}), run_tables_dir(cfg), "tab_a", "A table.", {}, cfg.hash, "", run
    )
    export.write_macros({"RProfile": cfg.profile}, run_tables_dir(cfg), {}, cfg.hash, run)


def test_paper_check_fails_when_includes_come_from_two_runs(tmp_path: Path) -> None:
    run_a = load_config("smoke", run_dir=tmp_path / "run-a")
    run_b = load_config("smoke", ["train.max_steps=7"], run_dir=tmp_path / "run-b")
    assert run_a.hash != run_b.hash
    for cfg in (run_a, run_b):
        _make_run_outputs(cfg)
    fig_pub, tab_pub = tmp_path / "pub" / "figures", tmp_path / "pub" / "generated"
    record = provenance(run_a)
    _replace_folder(run_figures_dir(run_a), fig_pub, record)
    _replace_folder(run_tables_dir(run_a), tab_pub, record)
    tex = _manuscript(tmp_path)
    assert check_manuscript(tex, "smoke", tab_pub, fig_pub) == []  # one run: clean

    # a figure of run B dropped into run A's published folder
    for suffix in ("png", "pdf"):
        (fig_pub / f"fig_b.{suffix}").write_bytes((run_figures_dir(run_b) / f"fig_b.{suffix}").read_bytes())
    problems = check_manuscript(tex, "smoke", tab_pub, fig_pub)
    assert any("come from 2 different runs" in p and run_b.hash in p for p in problems), problems
    assert any("fig_b.pdf changed after the run was published" in p for p in problems), problems

    # the tables published from another run than the figures
    _replace_folder(run_figures_dir(run_a), fig_pub, record)
    _replace_folder(run_tables_dir(run_b), tab_pub, provenance(run_b))
    problems = check_manuscript(tex, "smoke", tab_pub, fig_pub)
    assert any("were published from different runs" in p for p in problems), problems


def test_paper_check_sees_a_changed_source(tmp_path: Path) -> None:
    cfg = load_config("smoke", run_dir=tmp_path / "run")
    source = cfg.paths.metrics / "x.csv"
    source.parent.mkdir(parents=True)
    source.write_text("a\n1\n")
    _make_run_outputs(cfg)
    stamp = export.source_stamp([source], cfg.paths.root)
    export.write_table(
        pd.DataFrame({"a": [1]}), run_tables_dir(cfg), "tab_a", "A.", stamp, cfg.hash, "", provenance(cfg)
    )
    fig_pub, tab_pub = tmp_path / "pub" / "figures", tmp_path / "pub" / "generated"
    _replace_folder(run_figures_dir(cfg), fig_pub, provenance(cfg))
    _replace_folder(run_tables_dir(cfg), tab_pub, provenance(cfg))
    tex = _manuscript(tmp_path)
    assert check_manuscript(tex, "smoke", tab_pub, fig_pub) == []
    source.write_text("a\n2\n")
    problems = check_manuscript(tex, "smoke", tab_pub, fig_pub)
    assert problems == [f"{tab_pub}: tab_a.tex: source metrics/x.csv changed since the table was written",
                        f"{tab_pub}: tab_a.md: source metrics/x.csv changed since the table was written"]  # fmt: skip


def test_publish_replaces_the_whole_folder(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "pub"
    source.mkdir()
    target.mkdir()
    (source / "new.txt").write_text("new")
    (target / "old-from-another-run.txt").write_text("old")
    _replace_folder(source, target, {"config_hash": "abc", "run_dir": "/r"})
    assert sorted(p.name for p in target.iterdir()) == [PUBLISHED, "new.txt"]
    assert not list(tmp_path.glob(".pub*"))  # no staging folder left behind


def test_footer_on_a_figure_closed_in_pyplot(tmp_path: Path) -> None:
    cfg = load_config("smoke", run_dir=tmp_path / "run")
    fig, ax = plt.subplots(figsize=(2, 2))
    plt.close(fig)  # the stage plots detach their figures from pyplot before returning them
    (path,) = export.save_figure(fig, tmp_path, "closed", ("png",), 50, footer_text(cfg), provenance(cfg))
    assert include_provenance(path) == provenance(cfg)
    assert any(t.get_text() == footer_text(cfg) for t in fig.texts)


@pytest.mark.parametrize("fmt", ["png", "pdf"])
def test_figure_provenance_round_trip(tmp_path: Path, fmt: str) -> None:
    cfg = load_config("smoke", run_dir=tmp_path / "run (with parentheses)")
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1])
    (path,) = export.save_figure(fig, tmp_path, "f", (fmt,), 50, footer_text(cfg), provenance(cfg))
    assert include_provenance(path) == provenance(cfg)


def test_footer_names_run_and_phantom(tmp_path: Path) -> None:
    cfg = load_config("smoke", run_dir=tmp_path / "r")
    text = footer_text(cfg)
    assert "profile smoke" in text and cfg.hash in text and "phantom, not patient data" in text
    assert "phantom" not in footer_text(load_config("paper", run_dir=tmp_path / "p"))


@pytest.mark.parametrize(
    ("value", "text"),
    [(2525.491823399989, "2525.5"), (58.4627, "58.46"), (0.79583, "0.7958"), (3, "3"), (4.0, "4"),
     (float("nan"), "–"), (0.00012, "1.20e-04"), ("ours (smoke)", "ours (smoke)"), (True, "True")],
)  # fmt: skip
def test_format_value(value: object, text: str) -> None:
    assert export.format_value(value) == text


def test_wide_table_is_set_sideways_and_narrow_is_not() -> None:
    wide = pd.DataFrame([[0.5] * 12], columns=[f"c{i}" for i in range(12)])
    narrow = pd.DataFrame({"a": [2525.491823399989]})
    assert "\\begin{sidewaystable}" in export.table_to_latex(wide, "W", "w")
    latex = export.table_to_latex(narrow, "N", "n", note="profile smoke · phantom, not patient data")
    assert "sidewaystable" not in latex and "2525.5 \\\\" in latex and "2525.49" not in latex
    assert "phantom, not patient data" in latex


SPECIALS = "\\ ~ ^ _ % & #"
ESCAPED = r"\textbackslash \space \textasciitilde \space \textasciicircum \space \_ \% \& \#"


def _bare_specials(latex: str) -> list[str]:
    """Special characters left unescaped in a line of LaTeX text (after removing the escaped forms)."""
    rest = latex
    for seq in (r"\textbackslash", r"\textasciitilde", r"\textasciicircum", r"\space"):
        rest = rest.replace(seq, "")
    rest = re.sub(r"\\[_%&#${}]", "", rest)
    return re.findall(r"[\\~^_%&#]", rest)


def test_table_cells_headers_caption_and_macros_are_escaped(tmp_path: Path) -> None:
    frame = pd.DataFrame({f"metric {SPECIALS}": [SPECIALS, 0.5], "n": [1, float("nan")]})
    export.write_table(frame, tmp_path, "tab_x", f"caption {SPECIALS}", {}, "cfghash", f"note {SPECIALS}")
    tex = (tmp_path / "tab_x.tex").read_text().splitlines()
    cell = next(line for line in tex if line.startswith(ESCAPED))
    assert cell == ESCAPED + r" & 1 \\"
    assert not _bare_specials(cell.removesuffix(r" \\").replace(" & ", " "))
    header = next(line for line in tex if line.startswith("metric"))
    assert header == "metric " + ESCAPED + r" & n \\"
    caption = next(line for line in tex if line.startswith(r"\caption{"))
    assert caption == r"\caption{caption " + ESCAPED + "}"
    note = next(line for line in tex if "footnotesize" in line)
    assert ESCAPED in note and "--" in next(line for line in tex if line.startswith("0.5000"))
    macros = export.write_macros({"RText": SPECIALS}, tmp_path, {}, "cfghash").read_text()
    assert r"\newcommand{\RText}{" + ESCAPED + "}" in macros


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_escaped_table_compiles(tmp_path: Path) -> None:
    frame = pd.DataFrame({f"metric {SPECIALS}": [SPECIALS, 0.5], "n": [1, float("nan")]})
    tex = export.table_to_latex(frame, f"caption {SPECIALS} ± ≥", "x", note=f"note {SPECIALS} ·")
    document = "\n".join(
        [r"\documentclass{article}", r"\usepackage{booktabs,graphicx,rotating,xcolor}", r"\begin{document}",
         tex, r"\end{document}"]
    )  # fmt: skip
    (tmp_path / "t.tex").write_text(document)
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path, capture_output=True
    )
    assert run.returncode == 0, run.stdout[-2000:]


def test_paper_verb_refuses_without_a_published_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gliomagen.cli import main

    dirs = [f"figures.figures_dir={tmp_path / 'f'}", f"figures.tables_dir={tmp_path / 't'}"]
    argv = ["paper", "--run-dir", str(tmp_path / "run"), *[a for d in dirs for a in ("--set", d)]]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    assert "has no PUBLISHED.json" in capsys.readouterr().err
