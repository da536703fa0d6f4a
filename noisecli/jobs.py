"""<sweep>/jobs.json: the cluster job each point of a sweep was submitted as (written by
`cluster.submit`, read by it and by `sweep --status`)."""

from __future__ import annotations

import json
from pathlib import Path


def read_jobs(sweep_dir: Path) -> dict[str, dict]:
    try:
        jobs = json.loads((sweep_dir / "jobs.json").read_text())
    except (OSError, ValueError):
        return {}
    return jobs if isinstance(jobs, dict) else {}
