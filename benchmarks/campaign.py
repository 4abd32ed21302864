"""What the planned result tables still lack: each planned stream setting, its recorded seeds, the rest.

    python benchmarks/campaign.py                 # status of every planned setting, CPU hours left
    python benchmarks/campaign.py --commands      # the stream commands that record the missing runs
    python benchmarks/campaign.py --out results/campaign.md

The plan (:data:`PLAN`) is data: the sequential CounterFact streams on SmolLM2 that the editors'
tables ask for (100 edits for every faithful editor and one-step rule, 839 for AlphaEdit, MEMIT,
UltraEdit and the best one-step rule; 3 stream seeds each), each with the agent and requests per
step that ``benchmarks/editors.py stream`` uses. A planned seed counts as recorded when the run
store (``results/runs``, the leaderboard's) holds that editor (under today's name: retagged runs
of older defaults do not count), agent, requests per step and seed; its record says whether it
holds the in-the-wild protocol too. When one setting's records hold two parameter sets (a default
changed between them), only the newest set counts, as the leaderboard would show them apart.

The hours left are an estimate from the same setting's recorded wall time (else the same editor's
at the other length, scaled by the number of edits), on the machine that recorded them. A run in
progress (a stream checkpoint under ``runs/stream-checkpoints``, written by the stream command and
continued when the same command is run again) is shown with its edits done, and counts for what
is left of it.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs"
CHECKPOINTS = ROOT / "runs" / "stream-checkpoints"  # benchmarks/editors.py stream: runs in progress
MODEL = "smollm2-135m"
DATA = "knowedit_counterfact_test"
SEEDS = (0, 1, 2)

FAITHFUL = ("ft-l", "rome", "memit", "alphaedit", "prune", "rect", "ultraedit")
ONE_STEP = ("covariance", "covariance+nullspace", "gradient", "ridge", "ridge+spectral", "ridge+topk")


@dataclass(frozen=True)
class Planned:
    """One planned setting: an editor's stream of ``length`` edits, ``per_step`` requests a step."""

    editor: str
    length: int
    per_step: int
    agent: str

    @property
    def key(self) -> tuple:
        """What a run record must match: (editor, length, per_step, agent)."""
        return (self.editor, self.length, self.per_step, self.agent)

    @property
    def label(self) -> str:
        return f"{self.editor} / {self.agent}, {self.length} edits, {self.per_step} per step"

    def command(self, seeds: list[int]) -> str:
        args = [
            "python",
            "benchmarks/editors.py",
            "stream",
            "--editors",
            self.editor,
            "--edits",
            str(self.length),
        ]
        if self.per_step != 10:  # the stream command's default
            args += ["--edits-per-step", str(self.per_step)]
        args += ["--seeds", *map(str, seeds), "--wild", "--reuse-before"]
        return shlex.join(args)


def _faithful(editor: str, length: int) -> Planned:
    return Planned(editor, length, 10, "band")


def _one_step(editor: str, length: int) -> Planned:
    return Planned(editor, length, 1, "all")


PLAN: tuple[Planned, ...] = (
    *(_faithful(e, 100) for e in FAITHFUL),
    *(_one_step(e, 100) for e in ONE_STEP),
    *(_faithful(e, 839) for e in ("alphaedit", "memit", "ultraedit")),
    _one_step("covariance+nullspace", 839),  # the best one-step rule at 839 edits on the leaderboard
)


@dataclass
class Recorded:
    seed: int
    wild: bool
    wall_seconds: float | None
    params: str
    recorded: str


@dataclass
class Status:
    planned: Planned
    seeds: dict[int, Recorded]  # the newest parameter set's runs, by seed
    older: list[int]  # seeds recorded under an older parameter set only
    hours_per_run: float | None
    running: dict[int, int] = field(default_factory=dict)  # seed -> edits done, of a stream checkpoint

    @property
    def missing(self) -> list[int]:
        return [s for s in SEEDS if s not in self.seeds]

    @property
    def without_wild(self) -> list[int]:
        return sorted(s for s, r in self.seeds.items() if not r.wild)


def _records(runs_dir: Path) -> list[tuple[tuple, Recorded]]:
    """(setting key, what was recorded) for every run record of the plan's model and data."""
    import math

    from edit_gym.leaderboard import PROTOCOLS, load_runs

    wild_scores = PROTOCOLS["in the wild"]["score"]
    out = []
    for run in load_runs(runs_dir):
        if run.model != MODEL or run.data != DATA or run.digests:
            continue
        wild = all(k in run.final for k in wild_scores)
        wall = run.wall_seconds if math.isfinite(run.wall_seconds) and run.wall_seconds > 0 else None
        out.append(
            (
                (run.editor, run.length, run.per_step, run.agent),
                Recorded(run.seed, wild, wall, run.params, run.order[0]),
            )
        )
    return out


def _in_progress(checkpoints: Path) -> dict[tuple, dict[int, int]]:
    """(setting key) -> {seed: edits done} of the stream checkpoints under ``checkpoints``; a folder is
    named like its run's record (``model/data/length/editor--agent[--K-per-step]--seed-S``)."""
    from edit_gym.episode_file import META_FILE, EpisodeFileError, read_info

    out: dict[tuple, dict[int, int]] = {}
    for meta in sorted(checkpoints.glob(f"*/*/*/*/{META_FILE}")):
        model, data, length, name = meta.parent.relative_to(checkpoints).parts
        parts = name.split("--")
        if model != MODEL or data != DATA or len(parts) < 3 or not parts[-1].startswith("seed-"):
            continue
        per_step = int(parts[2].split("-")[0]) if len(parts) == 4 else 1
        try:
            done = int(read_info(meta.parent)["edits_done"])
        except (EpisodeFileError, KeyError, TypeError, ValueError) as err:
            print(f"skipping {meta.parent}: {err}", file=sys.stderr)
            continue
        key = (parts[0], int(length), per_step, parts[1])
        out.setdefault(key, {})[int(parts[-1][5:])] = done
    return out


def campaign_status(runs_dir: str | Path = RUNS, checkpoints: str | Path = CHECKPOINTS) -> list[Status]:
    """Each planned setting with its recorded seeds (newest parameter set), in plan order."""
    records = _records(Path(runs_dir))
    running = _in_progress(Path(checkpoints))
    statuses = []
    for planned in PLAN:
        mine = sorted((r for k, r in records if k == planned.key), key=lambda r: r.recorded)
        newest = mine[-1].params if mine else ""
        seeds = {r.seed: r for r in mine if r.params == newest}
        older = sorted({r.seed for r in mine if r.params != newest} - set(seeds))
        progress = {seed: done for seed, done in running.get(planned.key, {}).items() if seed not in seeds}
        statuses.append(Status(planned, seeds, older, _hours(planned, records), progress))
    return statuses


def _hours(planned: Planned, records: list[tuple[tuple, Recorded]]) -> float | None:
    """Median recorded wall hours of one run of this setting (else the editor's, scaled by length)."""
    same = [r.wall_seconds for k, r in records if k == planned.key and r.wall_seconds]
    if same:
        return statistics.median(same) / 3600
    scaled = [
        r.wall_seconds * planned.length / k[1]
        for k, r in records
        if k[0] == planned.editor and k[2] == planned.per_step and r.wall_seconds
    ]
    return statistics.median(scaled) / 3600 if scaled else None


def render(statuses: list[Status], commands: bool = False) -> str:
    """The status table (markdown), the hours left and, with ``commands``, what records the rest."""
    lines = [
        f"{MODEL}, CounterFact test, planned stream settings ({len(SEEDS)} seeds each):",
        "",
        "| setting | recorded seeds | missing | in progress (edits done) | without in-the-wild | "
        "older parameters only | h / run |",
        "|---|---|---|---|---|---|---|",
    ]
    left = 0.0
    unknown = []
    for s in statuses:
        hours = "?" if s.hours_per_run is None else f"{s.hours_per_run:.2f}"
        lines.append(
            f"| {s.planned.label} | {_seeds(sorted(s.seeds))} | {_seeds(s.missing)} | {_running(s)} | "
            f"{_seeds(s.without_wild)} | {_seeds(s.older)} | {hours} |"
        )
        if s.missing:
            if s.hours_per_run is None:
                unknown.append(s.planned.label)
            else:  # a run in progress counts for what is left of it
                runs_left = sum(1 - s.running.get(seed, 0) / s.planned.length for seed in s.missing)
                left += s.hours_per_run * runs_left
    done = sum(len(s.seeds) for s in statuses)
    lines += [
        "",
        f"{done} of {len(statuses) * len(SEEDS)} planned runs recorded; the missing ones take about "
        f"{left:.1f} h on the machine that recorded the others"
        + (f" (no estimate for: {', '.join(unknown)})" if unknown else "")
        + ".",
    ]
    if commands:
        todo = [s.planned.command(s.missing) for s in statuses if s.missing]
        lines += ["", "The missing runs:", "", "```bash", *todo, "```"] if todo else []
        rerun = [s.planned.command(s.without_wild) + " --force" for s in statuses if s.without_wild]
        if rerun:  # --force: the rerun replaces the record of the same setting and seed
            lines += ["", "Runs recorded without the in-the-wild protocol (rerun, replacing them):", ""]
            lines += ["```bash", *rerun, "```"]
    return "\n".join(lines) + "\n"


def _running(status: Status) -> str:
    done = status.running
    return ", ".join(f"{seed} ({done[seed]}/{status.planned.length})" for seed in sorted(done)) or "-"


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds)) or "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=str(RUNS), help="the run store (default: results/runs)")
    parser.add_argument(
        "--checkpoints", default=str(CHECKPOINTS), help="stream checkpoints of runs in progress"
    )
    parser.add_argument(
        "--commands", action="store_true", help="print the commands that record the missing runs"
    )
    parser.add_argument("--out", help="also write the page here (markdown)")
    args = parser.parse_args(argv)
    text = render(campaign_status(args.runs, args.checkpoints), commands=args.commands)
    sys.stdout.write(text)
    if args.out:
        from edit_gym.cache import atomic_write_text

        command = "python benchmarks/campaign.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        atomic_write_text(Path(args.out), f"<!-- generated by `{command}` -->\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
