"""The one builder of prepared run folders for tests: cases in the prepared layout plus ``cases.csv``.

Stages find their inputs through ``gliomagen.data.prepare.usable_cases`` (split and QC status from
``cases.csv``), so every test run folder is written here, the way ``gliomagen prepare`` leaves it. Tests get it
through the ``prepared_run`` fixture (``tests/conftest.py``); toy-data modules call it directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from gliomagen.cases import Case, parse_case_id, write_case
from gliomagen.data.outputs import PrepareOutputs
from gliomagen.paths import RunPaths


def write_prepared_run(
    paths: RunPaths | Path, cases: Iterable[tuple[str, Case]], qc_status: dict[str, str] | None = None
) -> list[Path]:
    """Write ``(split, case)`` pairs into ``<run>/prepared/<split>/`` and their rows into ``cases.csv``.

    Args:
        paths: the run's folders (``cfg.paths``) or the run folder itself.
        cases: ``(split, case)`` with split ``train`` or ``val`` and a BraTS-GLI case id.
        qc_status: per case id a QC status other than ``ok`` (e.g. ``invalid``).

    Returns:
        the case folders written.
    """
    paths = paths if isinstance(paths, RunPaths) else RunPaths(Path(paths))
    rows, folders = [], []
    for split, case in cases:
        folders.append(write_case(paths.prepared / split, case))
        patient, timepoint = parse_case_id(case.case_id)
        status = (qc_status or {}).get(case.case_id, "ok")
        rows.append(
            {
                "id": case.case_id,
                "patient": patient,
                "timepoint": timepoint,
                "split": split,
                "qc_status": status,
                "qc_reason": "" if status == "ok" else "set by the test",
            }
        )
    paths.prepared.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(PrepareOutputs(paths).cases_csv, index=False)
    return folders
