"""``gliomagen config --explain``: every key with its value, its meaning and the paper's value."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from gliomagen.config.loading import _submodel
from gliomagen.config.root import Config


def field_descriptions(model: type[BaseModel]) -> dict[str, str]:
    """``{field: description}`` from the ``Args:`` section of a config class's docstring (one source)."""
    doc = inspect.getdoc(model) or ""
    if "Args:" not in doc:
        return {}
    descriptions: dict[str, str] = {}
    current = None
    for line in doc.split("Args:", 1)[1].splitlines():
        entry = re.match(r"^    (\w+): (.*)$", line)
        if entry and entry.group(1) in model.model_fields:
            current = entry.group(1)
            descriptions[current] = entry.group(2).strip()
        elif current and line.startswith("        "):
            descriptions[current] += " " + line.strip()
        elif line.strip():
            current = None
    return descriptions


def _sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    yield prefix, model
    for name in model.model_fields:
        sub = _submodel(model, name)
        if sub is not None:
            yield from _sections(sub, f"{prefix}{name}.")


def undescribed_fields() -> list[str]:
    """Config keys without a description (kept empty by a test)."""
    return [
        f"{prefix}{name}"
        for prefix, model in _sections(Config)
        for name in model.model_fields
        if name not in field_descriptions(model)
    ]


def explain(cfg: Config) -> str:
    """Every key of ``cfg`` with its value, the paper's value where this profile differs, and what it means.

    Args:
        cfg: a loaded configuration.
    """
    paper = Config(profile="paper")
    lines = [f"# profile {cfg.profile}, config hash {cfg.hash} (runtime.* is not part of the hash)"]

    def walk(node: BaseModel, reference: BaseModel | None, prefix: str) -> None:
        descriptions = field_descriptions(type(node))
        for name in type(node).model_fields:
            value = getattr(node, name)
            ref = getattr(reference, name, None) if reference is not None else None
            if isinstance(value, BaseModel):
                lines.append(f"\n[{prefix}{name}]  {descriptions.get(name, '')}".rstrip())
                walk(value, ref if isinstance(ref, BaseModel) else None, f"{prefix}{name}.")
                continue
            shown = json.dumps(_plain(value))
            differs = reference is not None and _plain(value) != _plain(ref) and name != "profile"
            note = f"   (paper: {json.dumps(_plain(ref))})" if differs else ""
            lines.append(f"{prefix}{name} = {shown}{note}")
            if descriptions.get(name):
                lines.append(f"    {descriptions[name]}")

    walk(cfg, paper, "")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
