"""Move the runs of the old single-file store (``docs/results.json``) into the run store.

    python benchmarks/move_legacy_runs.py            # docs/results.json -> results/runs/...

Each run becomes its own record (``edit_gym.leaderboard.record_run``: checksummed, one file a
seeded stream) with nothing dropped: its editor is renamed to today's name
(``edit_gym.editing.rules.legacy_editor``: ``memit`` -> ``covariance`` ...) and the name it was
recorded under is kept as ``recorded_editor``. A run already in the store is left as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edit_gym.editing.rules import legacy_editor
from edit_gym.leaderboard import record_run, run_file_name

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT / "docs" / "results.json"))
    parser.add_argument("--runs", default=str(ROOT / "results" / "runs"))
    args = parser.parse_args()
    runs = json.loads(Path(args.source).read_text())
    moved = 0
    for i, run in enumerate(runs):
        old = run["config"]["editor"]
        record = {
            **run,
            "editor": legacy_editor(old),
            "recorded_editor": old,
            "recorded": f"legacy {i:03d}",  # file order of the old store (newest last)
            "recorded_in": "docs/results.json (benchmarks/results_table.py, before issue 20)",
        }
        if (Path(args.runs) / run_file_name(record)).exists():
            continue
        record_run(record, args.runs)
        moved += 1
    print(f"moved {moved} of {len(runs)} runs from {args.source} into {args.runs}")


if __name__ == "__main__":
    main()
