"""Give recorded runs a variant tag in their editor name, e.g. after a default changed.

A run store holds one file per (setting, seed); when an editor's defaults change, the runs made
under the old ones would share a row with the new ones (the leaderboard splits such rows by the
parameters' digest) or be replaced by a rerun. Retagging moves each run to the name of what it
ran, ``EDITOR (TAG)``, with everything else as recorded, the old editor name in ``retagged_from``
and a fresh checksum. A file can be taken from git history:

    python benchmarks/retag_runs.py --tag "L2 10, 25 steps" --from-commit 0ddc28f \\
        results/runs/smollm2-135m/knowedit_counterfact_test/100/alphaedit--band--10-per-step--seed-0.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edit_gym.leaderboard import editor_of, record_run  # noqa: E402
from edit_gym.result_file import load_result  # noqa: E402

RUNS = ROOT / "results" / "runs"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--from-commit", default=None, help="read each file as it was at this commit")
    args = parser.parse_args()
    for name in args.files:
        path = Path(name).resolve()
        if args.from_commit:
            rel = path.relative_to(ROOT).as_posix()
            text = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{args.from_commit}:{rel}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            with tempfile.TemporaryDirectory() as tmp:  # checked like any record
                (Path(tmp) / path.name).write_text(text)
                result = load_result(Path(tmp) / path.name)
        else:
            result = load_result(path)
        editor = editor_of(result)
        result["retagged_from"] = editor  # record_run drops the old stamp and checksums it anew
        result["editor"] = f"{editor} ({args.tag})"
        out = record_run(result, RUNS)
        if not args.from_commit and out.resolve() != path:
            path.unlink()
        print(f"{name} -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
