"""Ship a trained checkpoint with the package under a short name (``edit-gym checkpoints`` lists it).

Copies the folder into ``edit_gym/checkpoints/NAME/`` and lists it in the index with its digest and
the command that made it, which must be the exact command (a reader reruns it to get these bytes'
equal). Example:

    python benchmarks/ship_checkpoint.py runs/rledit-smollm2-v1 --name rledit-smollm2 --kind rledit \\
        --model smollm2-135m --what "RLEdit over ridge, ..." --command "edit-gym train rledit ..."
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edit_gym.shipped import KINDS, Shipped, ship  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="the checkpoint folder to ship")
    parser.add_argument("--name", required=True)
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--model", required=True, help="the backbone it was trained on, e.g. smollm2-135m")
    parser.add_argument("--what", required=True, help="one line: what it is and how it was trained")
    parser.add_argument("--command", required=True, help="the exact command that made it")
    args = parser.parse_args()
    entry = ship(args.source, Shipped(args.name, args.kind, args.model, args.what, "", args.command))
    print(f"shipped {entry.name} ({entry.sha256[:16]})")


if __name__ == "__main__":
    main()
