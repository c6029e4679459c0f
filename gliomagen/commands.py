"""What a ``gliomagen`` verb is: its help, what it reads and writes, its options and its entry point.

Each stage declares its verbs in its own ``cli`` module (``COMMANDS``), next to the stage's code, as the
nnU-Net and diffusers command lines do; :mod:`gliomagen.cli` only registers them. A ``cli`` module imports
nothing heavy at the top, so that ``gliomagen --help`` stays fast: the stage is imported when its verb runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gliomagen.config import Config


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For verbs that take only the common options (``--profile``, ``--set``, ``--run-dir``)."""


@dataclass(frozen=True)
class Command:
    """One ``gliomagen`` verb.

    Args:
        help: one line for ``gliomagen --help``.
        reads: what the verb reads (shown by ``gliomagen <verb> --help``).
        writes: what it writes.
        run: the entry point, called with the loaded config and the parsed arguments.
        add_arguments: adds the verb's own options (the common ones are added by :mod:`gliomagen.cli`).
        default_profile: the profile when none is given (``smoke`` unless the verb says otherwise).
        description: longer text for ``gliomagen <verb> --help`` (default: ``help``).
    """

    help: str
    reads: str
    writes: str
    run: Callable[[Config, argparse.Namespace], Any]
    add_arguments: Callable[[argparse.ArgumentParser], None] = no_arguments
    default_profile: str = "smoke"
    description: str = ""


def lazy(target: str) -> Callable[[Config, argparse.Namespace], Any]:
    """An entry point ``module:function`` imported when the verb runs (not when the parser is built).

    Args:
        target: e.g. ``gliomagen.generation.stage:run_cli``.
    """
    module_name, function_name = target.split(":")

    def run(cfg: Config, args: argparse.Namespace) -> Any:
        import importlib

        return getattr(importlib.import_module(module_name), function_name)(cfg, args)

    run.__qualname__ = run.__name__ = f"lazy({target})"
    return run
