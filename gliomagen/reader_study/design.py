"""The blinded design: which case is shown real or synthetic, at which slice, in which order, under which id."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gliomagen.config import ReaderStudyConfig
from gliomagen.reader_study.pairs import EligibleCase


@dataclass
class Panel:
    """One panel of the kit; everything but ``panel_id``, ``kind`` and ``images`` is key-only."""

    panel_id: str
    kind: str
    location: str
    case_id: str
    truth: str
    slice: int
    images: list[str] = field(default_factory=list)


def design_panels(
    cases: list[EligibleCase], rs: ReaderStudyConfig, rng: np.random.Generator
) -> tuple[list[Panel], list[dict[str, str]]]:
    """Assign classes and slices and return the shuffled panels (without image names yet).

    Per location, the eligible cases are shuffled; an odd one out is dropped (so the classes stay exactly
    balanced), the first half is shown real and the second synthetic, in every panel kind.

    Args:
        cases: eligible cases with their slice candidates.
        rs: reader-study settings.
        rng: the seeded generator (its draws define the whole design).

    Returns:
        The panels in presentation order, and ``{"case_id", "reason"}`` rows for dropped cases.
    """
    panels: list[Panel] = []
    dropped: list[dict[str, str]] = []
    for location in rs.locations:
        eligible = [c for c in cases if c.candidates[location]]
        for c in cases:
            if not c.candidates[location]:
                dropped.append({"case_id": c.pair.case_id, "reason": f"no {location} slice qualifies"})
        order = [eligible[i] for i in rng.permutation(len(eligible))]
        if len(order) % 2:
            odd = order.pop()
            dropped.append(
                {"case_id": odd.pair.case_id, "reason": f"{location}: odd one out, dropped to keep balance"}
            )
        half = len(order) // 2
        for rank, case in enumerate(order):
            truth = "real" if rank < half else "synthetic"
            slices = _draw_slices(case.candidates[location], rs.slices_per_location * len(rs.panels), rng)
            for i, z in enumerate(slices):
                kind = rs.panels[i % len(rs.panels)]
                panels.append(Panel("", kind, location, case.pair.case_id, truth, int(z)))
    panels = [panels[i] for i in rng.permutation(len(panels))]
    ids = random_ids(rng, len(panels))
    for panel, pid in zip(panels, ids, strict=True):
        panel.panel_id = pid
    return panels, dropped


def _draw_slices(candidates: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """``n`` slices, distinct while the candidates last (then the shuffled list is reused in order)."""
    perm = [candidates[i] for i in rng.permutation(len(candidates))]
    return [perm[i % len(perm)] for i in range(n)]


def random_ids(rng: np.random.Generator, n: int, nbytes: int = 6) -> list[str]:
    """``n`` distinct random hex tokens; they carry no information about the panel behind them."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        token = rng.bytes(nbytes).hex()
        if token not in seen:
            seen.add(token)
            ids.append(token)
    return ids
