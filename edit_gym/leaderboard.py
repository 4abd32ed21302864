"""The leaderboard: one table per (model, data, stream length, protocol) from the recorded runs.

A *run record* is one seeded stream (``edit_gym.runner.run_episode``'s result) saved with
:func:`edit_gym.result_file.save_result` (format, version, SHA-256) as its own file under the run
store (``results/runs/`` in the repository). :func:`build` reads every record, refuses one that is
damaged or edited by hand (naming the file), groups them and renders ``docs/results.md``; the
same call with the same files gives the same bytes, so ``edit-gym leaderboard --check`` can tell
whether the committed page is what the runs say.

How a table is made (stated on the page too):

* a row is one *setting*: editor (with its parameter tag), agent, requests per step, and the
  digests of any learned checkpoints behind them; the same name over other weights is another row,
  and so is the same name over other editor hyper-parameters (when a table holds runs of one name
  under two parameter sets, each row's label gets ``#`` and the first 6 hex digits of its
  parameters' digest, e.g. after a default changed);
* its cells are the mean and the 95% t-interval over the row's stream seeds, after the stream
  (final timing); for a setting recorded several times at one seed the newest record counts;
* a faulted stream (a write rolled back, a divergence) ends early: it is counted in ``faults``
  and left out of the means, never averaged in silently;
* rows are sorted by the protocol's *score*, the harmonic mean of its efficacy, generalization
  and specificity (:data:`PROTOCOLS`); a row whose runs lack a protocol's scores is not in that
  protocol's table.

Nothing here imports torch; the figure needs matplotlib (imported when drawn).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edit_gym.result_file import RESULT_FORMAT, load_result, save_result
from edit_gym.stats import interval

__all__ = [
    "PROTOCOLS",
    "Row",
    "Table",
    "build",
    "harmonic_mean",
    "load_runs",
    "record_run",
    "render_page",
    "run_file_name",
    "tables",
]

# (result key, column header, scale): scale 100 shows a fraction as %, 1 as it is
_TF_COLUMNS = (
    ("efficacy_score", "eff. score", 100),
    ("paraphrase_score", "para. score", 100),
    ("neighbourhood_score", "neigh. score", 100),
    ("efficacy", "token eff", 100),
    ("generalization", "token gen", 100),
    ("specificity", "rel./neigh. spec", 100),
    ("retention_first_n", "ret@10", 100),
    ("perplexity", "ppl", 1),
)
_WILD_COLUMNS = (
    ("wild_efficacy_em", "eff. EM", 100),
    ("wild_efficacy_f1", "eff. F1", 100),
    ("wild_generalization_em", "gen. EM", 100),
    ("wild_generalization_f1", "gen. F1", 100),
    ("wild_specificity_em", "spec. EM", 100),
    ("wild_specificity_f1", "spec. F1", 100),
)

PROTOCOLS: dict[str, dict] = {
    "teacher-forced": {
        "score": ("efficacy", "generalization", "specificity"),
        "columns": _TF_COLUMNS,
        "about": "the answer's tokens scored given the gold prefix (token accuracy), and the field's "
        "CounterFact probability scores (p(new) > p(true) on the prompt / paraphrases; p(true) > p(new) "
        "on neighbourhood prompts)",
    },
    "in the wild": {
        "score": ("wild_efficacy_f1", "wild_generalization_f1", "wild_specificity_f1"),
        "columns": _WILD_COLUMNS,
        "about": "greedy generation with natural stopping, SQuAD exact match / token F1 against the "
        "target (neighbourhood: against the unedited model's own answer); edit_gym/wild.py",
    },
}

DATA_NAMES = {
    "knowedit_counterfact_test": "CounterFact test (KnowEdit)",
    "knowedit_counterfact_train": "CounterFact train (KnowEdit)",
    "facts": "built-in facts",
}


def harmonic_mean(values: list[float]) -> float:
    """The harmonic mean (MEMIT's "Score" aggregation); 0 if any value is 0, nan if any is nan."""
    arr = np.asarray(values, dtype=float)
    if len(arr) == 0 or not np.isfinite(arr).all():
        return float("nan")
    if (arr <= 0).any():
        return 0.0
    return float(len(arr) / np.sum(1.0 / arr))


# ------------------------------------------------------------------------------ run records
@dataclass
class Run:
    """The fields of a run record the tables use (the record itself stays on disk)."""

    path: str
    model: str
    data: str
    length: int
    editor: str
    agent: str
    seed: int
    fault: str
    final: dict
    touched: float
    seconds_per_edit: float
    per_step: int = 1
    before: dict = field(default_factory=dict)
    digests: dict = field(default_factory=dict)
    order: tuple = ()
    params: str = ""  # digest of the editor's resolved hyper-parameters ("" if not recorded)
    tag: str = ""  # set by tables() when one label covers two parameter sets
    by_age: tuple = ()  # final token efficacy of the edits of each AGE_PARTS-th of the stream, oldest first
    measured: tuple = ()  # the scores the run was asked for (its record's protocol description)
    wall_seconds: float = float("nan")  # the whole run, evaluations included

    @property
    def setting(self) -> tuple:
        return (self.model, self.data, self.length, self.label)

    @property
    def agent_label(self) -> str:
        return self.agent + (f" @{self.digests['agent'][:8]}" if self.digests.get("agent") else "")

    @property
    def label(self) -> str:
        agent = self.agent_label
        editor = self.editor + (f" @{self.digests['rule'][:8]}" if self.digests.get("rule") else "")
        batch = f" ({self.per_step} per step)" if self.per_step != 1 else ""
        return f"{editor}{self.tag} / {agent}{batch}"


def data_name(source: str) -> str:
    """A dataset's name in the store and the tables: a built-in's own name, a file's stem."""
    return Path(source).stem  # "facts" -> "facts", ".../knowedit_counterfact_test.json" -> its stem


def editor_of(result: dict) -> str:
    """The editor a run record is filed under: its ``editor`` (a retagged or renamed one), else its config's."""
    return str(result.get("editor") or result["config"]["editor"])


def _data_name(result: dict) -> str:
    if result.get("data"):
        return str(result["data"])
    return data_name(str(result.get("config", {}).get("dataset", ""))) or "facts"


# what the pre-edit scores of a stream depend on (with the seed): the unedited model and the requests
STREAM_KEYS = ("model", "dataset", "known_only", "num_edits", "device", "dtype")


def _stream_identity(config: dict) -> tuple:
    """:data:`STREAM_KEYS` of a run's config, with a local data file as its resolved path (runs name
    it absolute or relative to the repository) and ``known_only`` as the env resolves a ``None``."""
    from edit_gym.data import resolve_known_only

    values = {k: config.get(k) for k in STREAM_KEYS}
    data = str(values["dataset"])
    values["known_only"] = resolve_known_only(values["known_only"], data)
    if Path(data).is_file():
        values["dataset"] = str(Path(data).resolve())
    return tuple(values[k] for k in STREAM_KEYS)


def recorded_before(
    root: str | Path, config: dict, seed: int, needs: tuple[str, ...] = ()
) -> tuple[dict | None, str | None]:
    """The pre-edit scores of the same stream (:data:`STREAM_KEYS` and seed) from a recorded run
    that has every score in ``needs`` (e.g. the generation protocol's), and the record's path;
    (None, None) if no run has them.

    They depend only on the stream, not on the editor or agent, and on 839 requests they cost as
    much as the final evaluation, so a sweep computes them once per stream (a run says where its
    came from in ``before_from``). Checksums are checked as for the tables.
    """
    folder = Path(root) / str(config["model"]) / data_name(str(config["dataset"])) / str(config["num_edits"])
    wanted = _stream_identity(config)
    for path in sorted(folder.glob(f"*--seed-{int(seed)}.json")) if folder.is_dir() else []:
        run = load_result(path)
        same = _stream_identity(run.get("config", {})) == wanted
        before = run.get("before") or {}
        if same and run.get("seed") == seed and before and all(k in before for k in needs):
            return dict(before), str(path)
    return None, None


def _params_digest(params: object) -> str:
    if not params:
        return ""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


AGE_PARTS = 4  # the stream is cut into this many parts by when an edit was made


def _by_age(result: dict) -> tuple:
    """Mean final token efficacy of the edits of each of AGE_PARTS equal parts of the stream (stream
    order: the first part holds the oldest edits); () if the record lacks each edit's final score."""
    values = ((result.get("final_per_edit") or {}).get("efficacy")) or []
    if len(values) < AGE_PARTS:
        return ()
    bounds = [round(i * len(values) / AGE_PARTS) for i in range(AGE_PARTS + 1)]
    parts = [
        [v for v in values[a:b] if v is not None and math.isfinite(v)]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return tuple(float(np.mean(part)) if part else float("nan") for part in parts)


def _tag_parameter_sets(runs: list[Run]) -> None:
    """Where one label of a (model, data, length) covers two parameter sets, tag each run's label."""
    for run in runs:
        run.tag = ""
    keys = [run.setting for run in runs]
    sets: dict[tuple, set[str]] = {}
    for run, key in zip(runs, keys, strict=True):
        sets.setdefault(key, set()).add(run.params)
    for run, key in zip(runs, keys, strict=True):
        if len(sets[key]) > 1:
            run.tag = f" #{run.params[:6] or 'none'}"


def _as_run(path: Path, result: dict, root: Path) -> Run:
    name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    try:
        cfg = result["config"]
        return Run(
            path=name,
            model=str(cfg["model"]),
            data=_data_name(result),
            length=int(cfg["num_edits"]),
            editor=editor_of(result),
            agent=str(result["agent"]),
            seed=int(result["seed"]),
            fault=str(result.get("fault") or ""),
            final=dict(result["final"]),
            touched=float(result.get("touched_fraction", float("nan"))),
            seconds_per_edit=float(result.get("seconds_per_edit", float("nan"))),
            per_step=int(cfg.get("edits_per_step", 1)),
            before=dict(result.get("before") or {}),
            digests=dict(result.get("checkpoint_sha256", {})),
            order=(str(result.get("recorded", "")), name),
            by_age=_by_age(result),
            params=_params_digest(result.get("params")),
            measured=tuple(result.get("protocol") or ()),
            wall_seconds=float(result.get("wall_seconds") or "nan"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{name!r} is not a run record ({type(err).__name__}: {err})") from None


def load_runs(root: str | Path) -> list[Run]:
    """Every run record under ``root`` (``*.json``, recursively, in path order).

    A record that is not valid JSON, lacks the result format or checksum, or no longer matches its
    checksum raises ValueError naming the file: a table is never built from a damaged run.
    """
    base = Path(root)
    if not base.is_dir():
        raise ValueError(
            f"no run store at {str(base)!r} (run from the repository root, or pass the folder of run records)"
        )
    runs = []
    for path in sorted(base.rglob("*.json")):
        result = load_result(path)
        if result.get("format") != RESULT_FORMAT or "sha256" not in result:
            raise ValueError(
                f"{str(path)!r} has no format and checksum: add runs with `edit-gym leaderboard add FILE` "
                "or save_result(), not by copying JSON in"
            )
        runs.append(_as_run(path, result, base))
    return runs


def run_file_name(result: dict) -> str:
    """Where a run goes in the store: ``model/data/length/editor--agent--seed-S.json`` (+ digests,
    + ``--K-per-step`` for K requests a step); one file per leaderboard setting and seed."""
    cfg = result["config"]
    editor = editor_of(result)
    agent = str(result["agent"])
    digests = result.get("checkpoint_sha256", {})
    if digests:
        agent += "@" + "-".join(digests[k][:8] for k in sorted(digests))

    def clean(text: str) -> str:
        keep = "".join(c if c.isalnum() or c in "+-_.@" else "_" for c in text)
        if len(keep) > 80:  # checkpoint paths: keep the name readable and unique
            keep = keep[:60] + "_" + hashlib.sha256(text.encode()).hexdigest()[:8]
        return keep.strip("_") or "_"

    per_step = int(cfg.get("edits_per_step", 1))
    batch = f"--{per_step}-per-step" if per_step != 1 else ""
    return (
        f"{clean(str(cfg['model']))}/{clean(_data_name(result))}/{int(cfg['num_edits'])}/"
        f"{clean(editor)}--{clean(agent)}{batch}--seed-{int(result['seed'])}.json"
    )


def record_run(result: dict, root: str | Path) -> Path:
    """Save one run into the store (atomically, with its checksum); the same setting and seed is
    replaced. Returns the file's path."""
    for key in ("config", "agent", "seed", "final"):
        if key not in result:
            raise ValueError(
                f"not a run result: no {key!r} (record what run_episode / edit-gym eval returns)"
            )
    path = Path(root) / run_file_name(result)
    clean = {k: v for k, v in result.items() if k not in ("format", "version", "sha256")}
    clean.setdefault("recorded", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return save_result(clean, path)


# ------------------------------------------------------------------------------ tables
@dataclass
class Row:
    label: str
    seeds: list[int]
    faults: list[int]
    cells: dict[str, tuple[float, float]]
    score: tuple[float, float]
    touched: tuple[float, float]
    seconds: tuple[float, float]
    files: list[str]
    by_seed: dict[int, float] = field(default_factory=dict)  # each unfaulted stream's score


@dataclass
class Table:
    model: str
    data: str
    length: int
    protocol: str
    rows: list[Row]
    before: Row | None = None  # the unedited model on the same streams (mean over the seeds' runs)


def _stat(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return interval(vals) if vals else (float("nan"), float("nan"))


def _row(label: str, runs: list[Run], protocol: str) -> Row | None:
    """One row of a protocol's table, from the runs that measured that protocol (a run recorded
    without the in-the-wild pass is left out of the in-the-wild row, not the row out of the table)."""
    spec = PROTOCOLS[protocol]
    if protocol != "teacher-forced":
        runs = [r for r in runs if all(k in r.final or k in r.measured for k in spec["score"])]
    ok = [r for r in runs if not r.fault]
    if runs and not all(all(k in r.final for k in spec["score"]) for r in ok or runs):
        return None
    if not ok and protocol != "teacher-forced":
        return None
    cells = {key: _stat([r.final.get(key, float("nan")) for r in ok]) for key, _, _ in spec["columns"]}
    by_seed = {r.seed: harmonic_mean([r.final[k] for k in spec["score"]]) for r in ok}
    score = _stat(list(by_seed.values()))
    return Row(
        label=label,
        seeds=sorted(r.seed for r in ok),
        faults=sorted(r.seed for r in runs if r.fault),
        cells=cells,
        score=score,
        touched=_stat([r.touched for r in runs]),
        seconds=_stat([r.seconds_per_edit for r in runs]),
        files=sorted(r.path for r in runs),
        by_seed=by_seed,
    )


def _before_row(members: dict[str, list[Run]], protocol: str) -> Row | None:
    """The unedited model's scores on the group's streams: one value per seed, so each stream
    order counts once (of the runs that recorded it, the one with the most scores: older runs
    lack the probability and generation-based ones; ties go to the first)."""
    per_seed: dict[int, Run] = {}
    for runs in members.values():
        for run in runs:
            if run.before and len(run.before) > len(
                per_seed[run.seed].before if run.seed in per_seed else {}
            ):
                per_seed[run.seed] = run
    unedited = [
        Run(r.path, r.model, r.data, r.length, "unedited", "-", seed, "", r.before, 0.0, 0.0)
        for seed, r in sorted(per_seed.items())
    ]
    row = _row("(unedited model)", unedited, protocol) if unedited else None
    if row is not None:
        row.touched = row.seconds = (float("nan"), float("nan"))
    return row


def tables(runs: list[Run]) -> list[Table]:
    """The tables, ordered by model, data, length and protocol; rows by score (best first)."""
    _tag_parameter_sets(runs)
    newest: dict[tuple, Run] = {}
    for run in sorted(runs, key=lambda r: r.order):
        newest[(*run.setting, run.seed)] = run  # the newest record of a setting and seed counts
    by_setting: dict[tuple, list[Run]] = {}
    for run in newest.values():
        by_setting.setdefault(run.setting, []).append(run)
    groups: dict[tuple, dict[str, list[Run]]] = {}
    for (model, data, length, label), members in by_setting.items():
        groups.setdefault((model, data, length), {})[label] = members
    out = []
    for model, data, length in sorted(groups):
        for protocol in PROTOCOLS:
            rows = [
                row
                for label, members in groups[(model, data, length)].items()
                if (row := _row(label, members, protocol)) is not None
            ]
            if rows:
                rows.sort(key=lambda r: (-(r.score[0] if math.isfinite(r.score[0]) else -1.0), r.label))
                out.append(
                    Table(
                        model,
                        data,
                        length,
                        protocol,
                        rows,
                        _before_row(groups[(model, data, length)], protocol),
                    )
                )
    return out


# ------------------------------------------------------------------------------ rendering
def _cell(stat: tuple[float, float], scale: float, seeds: int) -> str:
    mean, half = stat
    if not math.isfinite(mean):
        return "-"
    digits = 1 if scale == 100 else 2
    text = f"{scale * mean:.{digits}f}"
    return text + (f" ± {scale * half:.{digits}f}" if seeds > 1 else "")


def _table_markdown(table: Table) -> list[str]:
    cols = PROTOCOLS[table.protocol]["columns"]
    head = ["editor / agent", "score", *[c[1] for c in cols], "touched", "s / edit", "seeds", "faults"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in [*table.rows, *([table.before] if table.before else [])]:
        n = len(row.seeds)
        cells = [
            row.label,
            f"**{_cell(row.score, 100, n)}**",
            *[_cell(row.cells[key], scale, n) for key, _, scale in cols],
            _cell(row.touched, 100, n),
            _cell(row.seconds, 1, n),
            ", ".join(map(str, row.seeds)) or "-",
            f"{len(row.faults)} ({', '.join(map(str, row.faults))})" if row.faults else "0",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _title(table: Table) -> str:
    return f"{table.model}, {DATA_NAMES.get(table.data, table.data)}, {table.length} edits"


def _gap_lines(group: list[Table]) -> list[str]:
    """Teacher-forced vs in-the-wild score per row that has both, over the streams that recorded
    both (seed by seed): how much teacher forcing flatters."""
    tf = {r.label: r for t in group if t.protocol == "teacher-forced" for r in t.rows}
    wild = {r.label: r for t in group if t.protocol == "in the wild" for r in t.rows}
    both = {label: sorted(set(tf[label].by_seed) & set(wild[label].by_seed)) for label in tf if label in wild}
    both = {label: seeds for label, seeds in both.items() if seeds}
    if not both:
        return []
    lines = [
        "",
        "How much each protocol flatters (the streams that recorded both; score = harmonic mean, %):",
        "",
        "| editor / agent | seeds | teacher-forced | in the wild | difference |",
        "|---|---|---|---|---|",
    ]
    for label, seeds in both.items():
        a = _stat([tf[label].by_seed[s] for s in seeds])
        b = _stat([wild[label].by_seed[s] for s in seeds])
        n = len(seeds)
        lines.append(
            f"| {label} | {', '.join(map(str, seeds))} | {_cell(a, 100, n)} | {_cell(b, 100, n)} | "
            f"{100 * (a[0] - b[0]):+.1f} |"
        )
    return lines


PAIRED = ("efficacy", "generalization", "specificity", "retention_first_n")
REFERENCE_AGENTS = ("all", "band")  # the references an agent is paired with, first found wins


@dataclass
class Paired:
    """An agent minus the reference agent of the same editor, seed by seed (mean ± 95% interval)."""

    label: str
    reference: str
    seeds: list[int]
    diffs: dict[str, tuple[float, float]]
    relative: float  # agent's mean of eff/gen/spec over the paired seeds / the reference's - 1
    touched: tuple[float, float]


def paired(runs: list[Run]) -> dict[tuple, list[Paired]]:
    """Per (model, data, length): each agent against ``all`` (or ``band``) of the same editor, its
    weights and requests per step, on the seeds both have without a fault (two or more).

    The stream order is the largest source of variance over long streams (one order collapses what
    another does not), so a selector is judged on its difference from the reference on each order,
    not on two unpaired means; *relative* is the form of HiEdit's published claim.
    """
    _tag_parameter_sets(runs)
    cells: dict[tuple, dict[str, Run]] = {}
    for run in sorted(runs, key=lambda r: r.order):
        editor = run.label.rsplit(" / ", 1)[0]
        key = (run.model, run.data, run.length, editor, run.per_step, run.seed)
        cells.setdefault(key, {})[run.agent_label] = run
    groups: dict[tuple, dict[tuple, list[tuple[Run, Run]]]] = {}
    for (model, data, length, _editor, _per_step, _seed), agents in cells.items():
        ref_name = next((a for a in REFERENCE_AGENTS if a in agents), None)
        if ref_name is None or agents[ref_name].fault:
            continue
        for name, run in agents.items():
            if name != ref_name and not run.fault:
                groups.setdefault((model, data, length), {}).setdefault((run.label, ref_name), []).append(
                    (run, agents[ref_name])
                )
    out: dict[tuple, list[Paired]] = {}
    for key, settings in groups.items():
        for (label, ref_name), pairs in sorted(settings.items()):
            if len(pairs) < 2:
                continue
            pairs.sort(key=lambda p: p[0].seed)
            diffs = {
                m: _stat([a.final[m] - b.final[m] for a, b in pairs if m in a.final and m in b.final])
                for m in PAIRED
            }
            mine = np.mean([np.mean([a.final.get(m, np.nan) for m in PAIRED[:3]]) for a, _ in pairs])
            ref = np.mean([np.mean([b.final.get(m, np.nan) for m in PAIRED[:3]]) for _, b in pairs])
            out.setdefault(key, []).append(
                Paired(
                    label=label,
                    reference=ref_name,
                    seeds=[a.seed for a, _ in pairs],
                    diffs=diffs,
                    relative=float(mine / ref - 1) if ref > 0 else float("nan"),
                    touched=_stat([a.touched for a, _ in pairs]),
                )
            )
    return out


def kept_by_age(runs: list[Run]) -> dict[tuple, list[tuple[str, list[int], list[tuple[float, float]]]]]:
    """Per (model, data, length): each setting's final token efficacy by the age of the edits
    (:data:`AGE_PARTS` parts of the stream, oldest first), mean ± 95% interval over its seeds
    without a fault that recorded each edit's final score (the newest record of a seed counts)."""
    _tag_parameter_sets(runs)
    newest: dict[tuple, Run] = {}
    for run in sorted(runs, key=lambda r: r.order):
        newest[(*run.setting, run.seed)] = run
    settings: dict[tuple, list[Run]] = {}
    for run in newest.values():
        if run.by_age and not run.fault:
            settings.setdefault(run.setting, []).append(run)
    out: dict[tuple, list] = {}
    for (model, data, length, label), members in sorted(settings.items()):
        members.sort(key=lambda r: r.seed)
        stats = [_stat([r.by_age[i] for r in members]) for i in range(AGE_PARTS)]
        out.setdefault((model, data, length), []).append((label, [r.seed for r in members], stats))
    return out


def _age_lines(rows: list) -> list[str]:
    if not rows:
        return []
    step = 100 // AGE_PARTS
    parts = [f"edits {i * step + 1}-{(i + 1) * step}%" for i in range(AGE_PARTS)]
    lines = [
        "",
        "Which edits last: token efficacy after the whole stream of the edits made in each part of it "
        "(first column: the oldest), mean ± 95% interval over seeds; runs that recorded each edit's "
        "final score (`final_per_edit`):",
        "",
        "| editor / agent | seeds | " + " | ".join(parts) + " |",
        "|" + "---|" * (2 + AGE_PARTS),
    ]
    for label, seeds, stats in rows:
        cells = [_cell(stat, 100, len(seeds)) for stat in stats]
        lines.append(f"| {label} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return lines


def _paired_lines(rows: list[Paired]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "Paired against the reference agent of the same editor (`all`, else `band`), seed by seed, in "
        "points (mean ± 95% interval over the seeds both finished); *rel. avg*: the agent's mean of "
        "eff / gen / spec over those seeds / the reference's - 1:",
        "",
        "| editor / agent | reference | seeds | Δ eff | Δ gen | Δ spec | Δ ret@10 | rel. avg | touched |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        n = len(row.seeds)
        cells = []
        for m in PAIRED:
            mean, half = row.diffs[m]
            cells.append("-" if not math.isfinite(mean) else f"{100 * mean:+.1f} ± {100 * half:.1f}")
        rel = f"{100 * row.relative:+.0f}%" if math.isfinite(row.relative) else "-"
        lines.append(
            f"| {row.label} | {row.reference} | {', '.join(map(str, row.seeds))} | "
            + " | ".join(cells)
            + f" | {rel} | {_cell(row.touched, 100, n)} |"
        )
    return lines


def figure_name(table: Table) -> str:
    return f"{table.model}-{table.data}-{table.length}.png"


HEADER = """# Leaderboard

Generated by `edit-gym leaderboard` from the run records under `results/runs/` (one file a seeded
stream); do not edit by hand. `edit-gym leaderboard` with no arguments rewrites this page in place,
byte for byte from the same records (`--check` says whether it is up to date). Add a run with one
command: `edit-gym eval ... --record` (or `python benchmarks/editors.py stream ...`, which records
every stream it runs), or `edit-gym leaderboard add FILE` for a JSON from `edit-gym eval --json`.

How to read a table: a row is an editor / agent setting (learned checkpoints named by digest); each
cell is the mean ± 95% t-interval over its stream seeds, measured after the whole stream; a faulted
stream (the run stopped at a write it rolled back) is counted under *faults* and left out of the
means. **score** is the harmonic mean of the protocol's efficacy, generalization and specificity
(teacher-forced: token efficacy, token generalization and specificity; in the wild: the three F1
scores), and rows are sorted by it. *touched*: the share of candidate matrices written per step;
*s / edit*: wall seconds of the env's steps per edit on the machine the run names (a run that
shared the machine with other jobs reads slower: compare speed with the one-run ratios of
`results/editors/editors.md`; records since issue 21 also hold `cpu_seconds_per_edit`). *rel./neigh.
spec* is relation specificity on KnowEdit CounterFact records (same subject, other relations) and
neighbourhood specificity on the built-in facts. Rows whose editor is a one-step rule (`ridge`,
`gradient`, `covariance`, `nullspace`, `topk`, `spectral`, `rledit:`) were recorded before the
probability scores existed and show `-` there. Figures: `results/leaderboard/` (score against
seconds per edit, one point per row with its interval).
"""


def render_page(
    all_tables: list[Table],
    pairs: dict[tuple, list[Paired]] | None = None,
    ages: dict[tuple, list] | None = None,
) -> str:
    """The leaderboard page (markdown) for ``all_tables`` (with :func:`paired` and
    :func:`kept_by_age` rows); deterministic."""
    lines = [HEADER.rstrip("\n"), ""]
    for protocol, spec in PROTOCOLS.items():
        lines.append(f"- **{protocol}**: {spec['about']}.")
    groups: dict[tuple, list[Table]] = {}
    for table in all_tables:
        groups.setdefault((table.model, table.data, table.length), []).append(table)
    for key in sorted(groups, key=lambda k: (k[0], k[1], -k[2])):
        group = groups[key]
        lines += ["", f"## {_title(group[0])}", ""]
        for table in group:
            lines += [f"### {table.protocol}", "", *_table_markdown(table), ""]
        lines += _gap_lines(group)
        lines += _paired_lines((pairs or {}).get(key, []))
        lines += _age_lines((ages or {}).get(key, []))
        lines += ["", f"![score against seconds per edit](../results/leaderboard/{figure_name(group[0])})"]
        files = sorted({f for t in group for r in t.rows for f in r.files})
        lines += ["", f"<details><summary>{len(files)} run records</summary>", ""]
        lines += [f"- `results/runs/{f}`" for f in files]
        lines += ["", "</details>"]
    return "\n".join(lines).rstrip("\n") + "\n"


def headline(all_tables: list[Table], model: str = "smollm2-135m", top: int = 5) -> str:
    """The README's headline: the longest CounterFact-test streams on ``model``, both protocols."""
    cands = [t for t in all_tables if t.model == model and t.data == "knowedit_counterfact_test"]
    if not cands and all_tables:  # another store (a test's, a user's): its first model and data
        cands = [t for t in all_tables if (t.model, t.data) == (all_tables[0].model, all_tables[0].data)]
    if not cands:
        return "(no runs recorded yet)\n"
    length = max(t.length for t in cands)
    first = cands[0]
    lines = [
        f"{first.model}, {DATA_NAMES.get(first.data, first.data)}, {length} sequential edits "
        f"(top {top} of each protocol; mean ± 95% interval over stream seeds):",
        "",
    ]
    shown = {"teacher-forced": ("efficacy_score", "efficacy", "generalization", "specificity", "perplexity")}
    shown["in the wild"] = ("wild_efficacy_f1", "wild_generalization_f1", "wild_specificity_f1")
    for table in (t for t in cands if t.length == length):
        names = dict((k, h) for k, h, _ in PROTOCOLS[table.protocol]["columns"])
        scale = dict((k, sc) for k, _, sc in PROTOCOLS[table.protocol]["columns"])
        keys = shown[table.protocol]
        head = [table.protocol, "score", *[names[k] for k in keys], "s / edit", "seeds (faults)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in table.rows[:top]:
            n = len(row.seeds)
            cells = [row.label, _cell(row.score, 100, n), *[_cell(row.cells[k], scale[k], n) for k in keys]]
            cells += [_cell(row.seconds, 1, n), f"{n} ({len(row.faults)})"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def draw_figures(all_tables: list[Table], folder: str | Path) -> list[Path]:
    """One PNG per (model, data, length): score against seconds per edit, a panel per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[Table]] = {}
    for table in all_tables:
        groups.setdefault((table.model, table.data, table.length), []).append(table)
    out = []
    Path(folder).mkdir(parents=True, exist_ok=True)
    for key in sorted(groups):
        group = groups[key]
        fig, axes = plt.subplots(1, len(group), figsize=(9.5 * len(group), 4.8), squeeze=False)
        for ax, table in zip(axes[0], group, strict=True):
            for rank, row in enumerate(table.rows, 1):
                (s, sh), (x, xh) = row.score, row.seconds
                if not (math.isfinite(s) and math.isfinite(x)):
                    continue
                ax.errorbar(
                    x, 100 * s, yerr=100 * sh, xerr=xh, fmt="o", capsize=3, label=f"{rank}. {row.label}"
                )
                ax.annotate(str(rank), (x, 100 * s), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_ylim(0, 100)
            ax.legend(fontsize=5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
            ax.set_xscale("log")
            ax.set_xlabel("seconds per edit (log)")
            ax.set_ylabel("score (harmonic mean, %)")
            ax.set_title(f"{table.protocol}", fontsize=9)
            ax.grid(alpha=0.3)
        fig.suptitle(_title(group[0]), fontsize=10)
        fig.tight_layout()
        path = Path(folder) / figure_name(group[0])
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        out.append(path)
    return out


README_START = "<!-- leaderboard:headline -->"
README_END = "<!-- /leaderboard:headline -->"


def _with_headline(readme: str, text: str) -> str:
    if README_START not in readme or README_END not in readme:
        return readme
    before, rest = readme.split(README_START, 1)
    _, after = rest.split(README_END, 1)
    return f"{before}{README_START}\n{text.rstrip()}\n{README_END}{after}"


def build(
    runs_dir: str | Path = "results/runs",
    page: str | Path = "docs/results.md",
    *,
    readme: str | Path | None = "README.md",
    figures: str | Path | None = "results/leaderboard",
    check: bool = False,
) -> list[str]:
    """Render the page (and the README's headline block) from ``runs_dir``; return what changed.

    ``check=True`` writes nothing and returns the files that are out of date.
    """
    from edit_gym.cache import atomic_write_text

    runs = load_runs(runs_dir)
    all_tables = tables(runs)
    wanted = {Path(page): render_page(all_tables, paired(runs), kept_by_age(runs))}
    if readme is not None and Path(readme).is_file():
        text = Path(readme).read_text()
        wanted[Path(readme)] = _with_headline(text, headline(all_tables))
    changed = [str(p) for p, text in wanted.items() if not p.is_file() or p.read_text() != text]
    if not check:
        for p, text in wanted.items():
            if str(p) in changed:
                atomic_write_text(p, text)
        if figures is not None:
            draw_figures(all_tables, figures)
    return changed


def add(files: list[str | Path], runs_dir: str | Path = "results/runs") -> list[Path]:
    """Check each result file (format, checksum, a stream run) and copy it into the store."""
    loaded = []
    for f in files:
        result = load_result(f)
        try:
            _as_run(Path(f), result, Path("."))
        except ValueError as err:
            raise ValueError(f"{str(f)!r} is not a stream run record: {err}") from None
        loaded.append(result)
    return [record_run(result, runs_dir) for result in loaded]


def retag(runs_dir: str | Path, editor: str, tag: str, where: dict) -> list[tuple[Path, Path]]:
    """File the runs of ``editor`` whose recorded hyper-parameters match ``where`` under
    ``"EDITOR (TAG)"``, e.g. when the editor's defaults change and its older runs must stay on
    record under a name that says what they ran. Each record is written under its new name
    (checksummed) before the old file goes, keeping ``recorded_editor``; nothing is dropped.
    Every record is checked before anything moves (two matches that would land on one name are
    refused). A retag that stopped between writing a new file and removing the old one is
    finished by running it again. Records whose ``before_from`` named a moved file are pointed at
    its new name (:func:`relink_before`). Returns the (old, new) paths."""
    if not where:
        raise ValueError("retag needs --where: the hyper-parameters that pick the runs to retag")
    if not tag or not tag.strip():
        raise ValueError("retag needs a non-empty tag")
    root = Path(runs_dir)
    moves: list[tuple[Path, dict, Path]] = []
    claimed: dict[Path, Path] = {}
    for path in sorted(root.rglob("*.json")):
        result = load_result(path)  # refuses a damaged or hand-edited record, naming it
        params = result.get("params") or {}
        if editor_of(result) != editor or any(params.get(k, _MISSING) != v for k, v in where.items()):
            continue
        new = {
            **result,
            "editor": f"{editor} ({tag})",
            "recorded_editor": result.get("recorded_editor", editor),
        }
        target = root / run_file_name(new)
        if target in claimed:
            raise ValueError(
                f"retag {path}: {claimed[target]} would go to {target} as well (two records of one "
                "setting and seed); move one away first"
            )
        if target.exists() and not _same_run(load_result(target), new):
            raise ValueError(f"retag {path}: {target} exists already (another run under that name)")
        claimed[target] = path
        moves.append((path, new, target))
    done = []
    for path, new, target in moves:
        # a target that exists holds this very run: an earlier retag stopped before removing the old file
        written = target if target.exists() else record_run(new, root)
        path.unlink()
        done.append((path, written))
    relink_before(root, dict(done))
    return done


def _same_run(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("recorded", "seed", "config", "final", "editor"))


def relink_before(
    runs_dir: str | Path, moved: dict[Path, Path], recorded_before: str | None = None
) -> list[Path]:
    """Point every record whose ``before_from`` names a file in ``moved`` (old path -> new path,
    both inside ``runs_dir``) at the new path, keeping how it was written (relative or absolute
    prefix). ``recorded_before`` (an ISO time) limits this to records made before it: a record made
    after a move named whatever was then at the old path. Returns the records rewritten."""
    root = Path(runs_dir)
    tails = {old.relative_to(root).as_posix(): new.relative_to(root).as_posix() for old, new in moved.items()}
    changed = []
    for path in sorted(root.rglob("*.json")):
        result = load_result(path)
        link = str(result.get("before_from") or "").replace("\\", "/")
        if recorded_before is not None and str(result.get("recorded", "")) >= recorded_before:
            continue
        for old, new in tails.items():
            if link == old or link.endswith("/" + old):
                result["before_from"] = link[: len(link) - len(old)] + new
                clean = {k: v for k, v in result.items() if k not in ("format", "version", "sha256")}
                save_result(clean, path)
                changed.append(path)
                break
    return changed


_MISSING = object()
