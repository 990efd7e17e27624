"""This tree measured against another checkout: each in a process of its own, figures as JSON.

A bench that compares with ``--before DIR`` runs itself with ``--json`` once per tree, the
tree's path in an environment variable that the child puts first on ``sys.path``, so each
child imports one tree's ``callrouter`` and nothing of the other's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def figures_per_tree(
    script: str, arguments: list[str], variable: str, before: Path | None
) -> dict[str, dict[str, float]]:
    """``script --json *arguments`` in ``before`` (labelled "before", first) and in this tree
    ("this"): each run's figures by label, in that order."""
    trees = [("this", ROOT)] if before is None else [("before", before), ("this", ROOT)]
    return {
        label: json.loads(
            subprocess.run(
                [sys.executable, script, "--json", *arguments],
                env={**os.environ, variable: str(tree.resolve())},
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for label, tree in trees
    }
