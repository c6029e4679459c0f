"""Static checks that the set-up files stay consistent with pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import yaml

from gliomagen.paths import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
DEPENDENCIES = PYPROJECT["project"]["dependencies"]


def _pins() -> dict[str, str]:
    pins = {}
    for dep in DEPENDENCIES:
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)", dep)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_torch_pins() -> None:
    pins = _pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    # no other line may name torch without the pin
    assert sum(1 for d in DEPENDENCIES if re.match(r"^torch\s*([=<>!~;\[]|$)", d)) == 1


def test_console_script() -> None:
    assert PYPROJECT["project"]["scripts"]["gliomagen"] == "gliomagen.cli:main"


def test_dockerfile_consistent() -> None:
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M)
    assert base and re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-\S+", base.group(1)), "pinned CUDA base image"
    pins = _pins()
    assert f"torch=={pins['torch']}" in text and f"torchvision=={pins['torchvision']}" in text
    assert "pip install -e" in text
    assert re.search(r'^CMD \["gliomagen", "reproduce", "--profile", "paper"\]', text, re.M)
    assert "python3.11" in text


def test_environment_yml_consistent() -> None:
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_deps = next(d["pip"] for d in deps if isinstance(d, dict))
    pins = _pins()
    for line in pip_deps:
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line)
        if m:
            assert pins.get(m.group(1).lower()) == m.group(2), (
                f"environment.yml pins {line}, pyproject differs"
            )
    assert any(line.startswith("-e .") for line in pip_deps)


def test_ci_lints_then_calls_make_test() -> None:
    lines = [line.strip() for line in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make lint" in lines and "make test" in lines
    assert lines.index("make lint") < lines.index("make test")
    lint = (PROJECT_ROOT / "Makefile").read_text().split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check" in lint and "ruff format --check" in lint and "mypy" in lint


def test_readme_starts_with_the_two_commands() -> None:
    head = "\n".join((PROJECT_ROOT / "README.md").read_text().splitlines()[:25])
    assert "make reproduce" in head and "make test" in head


def test_make_test_does_not_skip_the_browser_test_silently() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    test_rule = re.search(r"^test:(.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert test_rule and "chromium" in test_rule.group(1)  # installs it (or says so) first
    assert "-rs" in test_rule.group(2)  # pytest lists every skipped test with its reason
    chromium_rule = makefile.split("\nchromium:", 1)[1].split("\n\n", 1)[0]
    assert "apt-get install" in chromium_rule and "SKIPPED" in chromium_rule


def test_make_lab_starts_at_the_repository_root() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    lab = makefile.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert "jupyter lab" in lab and 'root_dir="$(CURDIR)"' in lab


def test_ipywidgets_is_a_dependency() -> None:
    # without it tqdm's notebook bars fall back to a warning ("IProgress not found") in every notebook
    assert any(d.startswith("ipywidgets") for d in PYPROJECT["project"]["dependencies"])


#: declared dependencies the package never imports by name, and why each is needed anyway
USED_WITHOUT_IMPORT = {
    "tensorboard": "torch.utils.tensorboard.SummaryWriter needs it (training logs)",
    "pyradiomics": "imported as `radiomics`",
    "papermill": "imported as `papermill`",
    "jupyterlab": "`make lab`",
    "ipykernel": "the kernel papermill starts",
    "ipywidgets": "tqdm's notebook progress bars",
    "tabulate": "pandas.DataFrame.to_markdown",
    "pyyaml": "imported as `yaml`",
    "pillow": "imported as `PIL`",
    "scikit-image": "imported as `skimage`",
    "scikit-learn": "imported as `sklearn`",
    "frd-score": "imported as `frd_score`",
    "torch-fidelity": "imported as `torch_fidelity`",
}


def _third_party_imports() -> set[str]:
    import ast
    import sys

    names = set()
    for path in (PROJECT_ROOT / "gliomagen").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in {"gliomagen", "__future__"}}


def test_dependencies_match_imports() -> None:
    """Every library the package imports is declared, and every declared one is used."""
    from importlib.metadata import packages_distributions

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {canonical(re.match(r"^[A-Za-z0-9_.-]+", d).group(0)) for d in DEPENDENCIES}  # type: ignore[union-attr]
    dists = packages_distributions()
    imported = {canonical(dists[name][0]) for name in _third_party_imports() if name in dists}
    unknown = sorted(n for n in _third_party_imports() if n not in dists)
    assert not unknown, f"imported but not installed: {unknown}"
    assert sorted(imported - declared) == [], "imported by gliomagen but not declared in pyproject.toml"
    unused = declared - imported - {canonical(k) for k in USED_WITHOUT_IMPORT}
    assert sorted(unused) == [], (
        "declared in pyproject.toml but never imported (say why in USED_WITHOUT_IMPORT)"
    )
