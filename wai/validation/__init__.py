"""Validation of converted scenes and datasets against the format contract (``wai-validate``).

``validate(path)`` returns a ``Report`` listing every problem as an ``Issue`` with a stable ``code``;
``format_report`` renders a one-screen summary and ``Report.to_json()`` the stable machine-readable form;
``run_cli`` is what the ``wai-validate`` command calls. See ``docs/validation.md``.
"""

from __future__ import annotations

import json
import sys

from wai.errors import SceneNotFoundError
from wai.validation.validator import REPORT_VERSION, Issue, Report, format_report, validate

__all__ = ["REPORT_VERSION", "Issue", "Report", "format_report", "run_cli", "validate"]


def run_cli(path: str, as_json: bool, strict: bool, geometry: bool, progress: bool | None = None) -> int:
    """Validate ``path``, print the report (JSON or the summary) and return the exit code.

    0: no errors (in strict mode: no warnings either); 1: problems found; 2: ``path`` is not a directory
    (a usage error; click also exits with 2 for bad options). ``progress``: a bar on stderr (None: when stderr
    is a terminal and the output is not ``--json``).
    """
    try:
        report = validate(path, strict=strict, geometry=geometry,
                          progress=(False if as_json else None) if progress is None else progress)
    except SceneNotFoundError as e:
        print(f"wai-validate: {e}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_report(report))
    return report.exit_code
