"""The leaderboard: hand-written run records give the right means, intervals, fault counts and
order; damaged or hand-edited records are refused naming the file; the committed page is what the
committed records give, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edit_gym import leaderboard
from edit_gym.cli import main
from edit_gym.result_file import save_result
from edit_gym.stats import interval

ROOT = Path(__file__).resolve().parents[1]


def _run(editor: str, seed: int, eff: float, gen: float, spec: float, *, fault: str = "", wild: bool = False):
    final = {"efficacy": eff, "generalization": gen, "specificity": spec, "perplexity": 8.0 + seed}
    if wild:
        final.update(wild_efficacy_f1=eff / 2, wild_generalization_f1=gen / 2, wild_specificity_f1=spec)
    return {
        "config": {"model": "tiny", "dataset": "facts", "num_edits": 20, "editor": editor},
        "agent": "all",
        "seed": seed,
        "fault": fault,
        "final": final,
        "touched_fraction": 0.5,
        "seconds_per_edit": 1.0 + seed,
    }


@pytest.fixture
def store(tmp_path):
    runs = tmp_path / "runs"
    for seed, (e, g, s) in enumerate([(0.9, 0.6, 0.8), (0.7, 0.5, 0.6), (0.8, 0.7, 0.7)]):
        leaderboard.record_run(_run("alphaedit", seed, e, g, s, wild=True), runs)
    leaderboard.record_run(_run("memit", 0, 0.2, 0.2, 0.2), runs)
    leaderboard.record_run(_run("memit", 1, 0.3, 0.3, 0.3), runs)
    leaderboard.record_run(
        _run("memit", 2, 0.9, 0.9, 0.9, fault="edit loss after update 60 exceeds max_loss"), runs
    )
    return runs


def test_means_intervals_faults_and_order(store):
    tables = leaderboard.tables(leaderboard.load_runs(store))
    assert [(t.protocol, [r.label for r in t.rows]) for t in tables] == [
        ("teacher-forced", ["alphaedit / all", "memit / all"]),
        ("in the wild", ["alphaedit / all"]),  # memit has no generation scores
    ]
    alpha, memit = tables[0].rows
    assert alpha.cells["efficacy"] == pytest.approx(interval([0.9, 0.7, 0.8]))
    scores = [leaderboard.harmonic_mean(v) for v in ([0.9, 0.6, 0.8], [0.7, 0.5, 0.6], [0.8, 0.7, 0.7])]
    assert alpha.score == pytest.approx(interval(scores))
    assert alpha.seeds == [0, 1, 2] and alpha.faults == []
    # the faulted stream is counted and left out of the means (its 0.9 would lift them)
    assert memit.seeds == [0, 1] and memit.faults == [2]
    assert memit.cells["efficacy"] == pytest.approx(interval([0.2, 0.3]))
    assert memit.seconds == pytest.approx(interval([1.0, 2.0, 3.0]))  # cost counts every stream
    wild = tables[1].rows[0]
    assert wild.cells["wild_efficacy_f1"][0] == pytest.approx(np.mean([0.45, 0.35, 0.4]))
    page = leaderboard.render_page(tables)
    # HM 0.2 and 0.3 over 2 seeds: 25.0 +- t(1) 12.706 * 0.0707 / sqrt(2) = 63.5
    assert "| memit / all | **25.0 ± 63.5** |" in page
    assert "| 1 (2) |" in page
    assert page == leaderboard.render_page(leaderboard.tables(leaderboard.load_runs(store)))


def test_a_run_without_the_wild_pass_leaves_only_the_wild_row_and_gaps_pair_seeds(tmp_path):
    runs = tmp_path / "runs"
    leaderboard.record_run(_run("ultraedit", 0, 0.9, 0.9, 0.9), runs)  # teacher-forced only
    for seed, eff in [(1, 0.6), (2, 0.4)]:
        leaderboard.record_run(_run("ultraedit", seed, eff, 0.5, 0.5, wild=True), runs)
    asked = _run("ultraedit", 3, 0.0, 0.0, 0.0, fault="target diverged")  # asked for both, faulted
    asked["protocol"] = {"efficacy": "...", "wild_efficacy_f1": "...", "wild_generalization_f1": "..."}
    asked["protocol"]["wild_specificity_f1"] = "..."
    leaderboard.record_run(asked, runs)
    tf, wild = leaderboard.tables(leaderboard.load_runs(runs))
    assert tf.rows[0].seeds == [0, 1, 2] and tf.rows[0].faults == [3]
    # seed 0 has no generation scores: the in-the-wild row is seeds 1 and 2, the faulted 3 counted
    assert wild.rows[0].seeds == [1, 2] and wild.rows[0].faults == [3]
    assert wild.rows[0].cells["wild_efficacy_f1"][0] == pytest.approx(0.25)
    page = leaderboard.render_page([tf, wild])
    # the gap over the seeds that recorded both: teacher-forced HM of seeds 1, 2 against theirs in the wild
    hm = [leaderboard.harmonic_mean(v) for v in ([0.6, 0.5, 0.5], [0.4, 0.5, 0.5])]
    wild_hm = [leaderboard.harmonic_mean(v) for v in ([0.3, 0.25, 0.5], [0.2, 0.25, 0.5])]
    gap = 100 * (np.mean(hm) - np.mean(wild_hm))
    assert f"| ultraedit / all | 1, 2 | {100 * np.mean(hm):.1f} ± " in page
    assert page.split("| ultraedit / all | 1, 2 |")[1].split("\n")[0].endswith(f"| {gap:+.1f} |")


def test_one_name_over_two_parameter_sets_is_two_rows(tmp_path):
    runs = tmp_path / "runs"
    for seed, steps in [(0, 25), (1, 25), (2, 60)]:  # e.g. a default changed between the runs
        run = _run("rome", seed, 0.5 + seed / 10, 0.5, 0.5)
        run["params"] = {"v_num_grad_steps": steps, "band": [7]}
        leaderboard.record_run(run, runs)
    (table,) = leaderboard.tables(leaderboard.load_runs(runs))
    labels = sorted(r.label for r in table.rows)
    assert len(labels) == 2 and all(label.startswith("rome #") for label in labels)
    assert sorted(len(r.seeds) for r in table.rows) == [1, 2]
    leaderboard.record_run({**_run("ft-l", 0, 0.5, 0.5, 0.5), "params": {"x": 1}}, runs)
    assert "ft-l / all" in [r.label for r in leaderboard.tables(leaderboard.load_runs(runs))[0].rows]


def test_retag_files_old_defaults_under_a_tag_and_loses_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, l2 in [(0, 3.0), (1, 3.0), (2, 10.0)]:  # the default changed after seed 1's run
        leaderboard.record_run({**_run("alphaedit", seed, 0.5, 0.5, 0.5), "params": {"L2": l2}}, runs)
    before = {p.name for p in runs.rglob("*.json")}
    args = ["leaderboard", "--results", str(tmp_path), "--page", str(tmp_path / "p.md"), "--readme", ""]
    assert main(["leaderboard", "retag", "alphaedit", "l2-3", "--where", '{"L2": 3.0}', *args[1:]]) == 0
    assert "retagged 2 run(s)" in capsys.readouterr().out
    after = sorted(p.name for p in runs.rglob("*.json"))
    assert after == [
        "alphaedit--all--seed-2.json",
        "alphaedit__l2-3--all--seed-0.json",
        "alphaedit__l2-3--all--seed-1.json",
    ]
    assert len(before) == 3
    (table,) = leaderboard.tables(leaderboard.load_runs(runs))
    assert sorted(r.label for r in table.rows) == ["alphaedit (l2-3) / all", "alphaedit / all"]
    moved = json.loads(next(runs.rglob("alphaedit__l2-3--all--seed-0.json")).read_text())
    assert moved["recorded_editor"] == "alphaedit" and moved["final"]["efficacy"] == 0.5
    # nothing matches: nothing moves; a bad --where is refused
    assert leaderboard.retag(runs, "alphaedit", "x", {"L2": 99.0}) == []
    with pytest.raises(ValueError, match="needs --where"):
        leaderboard.retag(runs, "alphaedit", "x", {})
    assert main(["leaderboard", "retag", "alphaedit", "x", "--where", "[1]", *args[1:]]) == 2
    assert "JSON object" in capsys.readouterr().err


def test_retag_finishes_an_interrupted_move_refuses_clashes_and_relinks(tmp_path, capsys):
    runs = tmp_path / "runs"
    old = leaderboard.record_run({**_run("alphaedit", 0, 0.5, 0.5, 0.5), "params": {"L2": 3.0}}, runs)
    user = {
        **_run("rome", 0, 0.4, 0.4, 0.4),
        "before_from": f"results/runs/{old.relative_to(runs).as_posix()}",
    }
    linked = leaderboard.record_run(user, runs)
    # an earlier retag wrote the new file, then stopped before removing the old one
    moved = {**leaderboard.load_result(old), "editor": "alphaedit (l2-3)", "recorded_editor": "alphaedit"}
    target = leaderboard.record_run(moved, runs)
    ((src, dst),) = leaderboard.retag(runs, "alphaedit", "l2-3", {"L2": 3.0})
    assert (src, dst) == (old, target) and not old.exists()
    assert leaderboard.load_result(target)["final"]["efficacy"] == 0.5
    # the record that took its pre-edit scores from the moved file now names the new one
    assert (
        leaderboard.load_result(linked)["before_from"]
        == f"results/runs/{target.relative_to(runs).as_posix()}"
    )
    # two matches that would land on one name: refused before anything moves
    run = {**_run("memit", 1, 0.5, 0.5, 0.5), "params": {"L2": 1.0}}
    first = leaderboard.record_run(run, runs)
    copy = first.with_name("copy-of-a-run.json")
    copy.write_bytes(first.read_bytes())
    with pytest.raises(ValueError, match="as well"):
        leaderboard.retag(runs, "memit", "x", {"L2": 1.0})
    assert first.exists() and copy.exists() and not any(runs.rglob("memit__x*"))
    # --check only reads: it does not go with retag
    args = ["--results", str(tmp_path), "--page", str(tmp_path / "p.md"), "--readme", "", "--check"]
    assert main(["leaderboard", "retag", "memit", "x", "--where", '{"L2": 1.0}', *args]) == 2
    assert "--check only reads" in capsys.readouterr().err
    assert first.exists() and copy.exists()


def test_which_edits_last_by_age(tmp_path):
    runs = tmp_path / "runs"
    for seed, per_edit in [(0, [0, 0, 1, 1, 1, 1, 1, 1]), (1, [0, 1, 0, 1, 1, 1, 1, 0])]:
        run = _run("alphaedit", seed, 0.5, 0.5, 0.5)
        run["final_per_edit"] = {"efficacy": per_edit, "specificity": [1.0] * 8}
        leaderboard.record_run(run, runs)
    leaderboard.record_run(_run("memit", 0, 0.5, 0.5, 0.5), runs)  # no per-edit scores: not in it
    loaded = leaderboard.load_runs(runs)
    ((label, seeds, stats),) = leaderboard.kept_by_age(loaded)[("tiny", "facts", 20)]
    assert label == "alphaedit / all" and seeds == [0, 1]
    # quarters of 8 edits: seed 0 -> 0, 1, 1, 1; seed 1 -> 0.5, 0.5, 1, 0.5
    assert [m for m, _ in stats] == pytest.approx([0.25, 0.75, 1.0, 0.75])
    assert stats[0] == pytest.approx(interval([0.0, 0.5]))
    page = tmp_path / "page.md"
    leaderboard.build(runs, page, readme=None, figures=None)
    assert "| alphaedit / all | 0, 1 | 25.0 ± " in page.read_text()


def test_harmonic_mean():
    assert leaderboard.harmonic_mean([0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert leaderboard.harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert leaderboard.harmonic_mean([1.0, 0.0]) == 0.0
    assert np.isnan(leaderboard.harmonic_mean([1.0, float("nan")]))


def test_a_hand_edited_record_is_refused_naming_the_file(store):
    path = next(store.rglob("alphaedit--all--seed-1.json"))
    data = json.loads(path.read_text())
    data["final"]["efficacy"] = 1.0  # "improved" by hand
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="seed-1.json.*checksum"):
        leaderboard.load_runs(store)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"config": {', "not valid JSON"),
        ('{"final": {}}', "no format and checksum"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_damaged_or_foreign_records_are_refused(store, content, problem):
    bad = store / "tiny" / "facts" / "20" / "broken.json"
    bad.write_text(content)
    with pytest.raises(ValueError, match=f"broken.json.*{problem}|{problem}.*broken.json"):
        leaderboard.load_runs(store)


def test_a_checksummed_file_that_is_not_a_run_is_refused(store):
    save_result({"hello": 1}, store / "odd.json")
    with pytest.raises(ValueError, match="odd.json.*not a run record"):
        leaderboard.load_runs(store)


def test_cli_builds_checks_and_adds(store, tmp_path, capsys):
    results, page, readme = store.parent, tmp_path / "page.md", tmp_path / "README.md"
    readme.write_text(f"intro\n{leaderboard.README_START}\nold\n{leaderboard.README_END}\nrest\n")
    args = ["leaderboard", "--results", str(results), "--page", str(page), "--readme", str(readme)]
    assert main([*args, "--check"]) == 1
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    assert "alphaedit / all" in readme.read_text() and readme.read_text().endswith("rest\n")
    assert (results / "leaderboard" / "tiny-facts-20.png").is_file()
    # adding a run is one command; the page then shows it
    extra = tmp_path / "eval.json"
    save_result(_run("rome", 0, 1.0, 1.0, 1.0), extra)
    assert main(["leaderboard", "add", str(extra), *args[1:]]) == 0
    assert "| rome / all |" in page.read_text()
    capsys.readouterr()
    assert main(["leaderboard", "add", *args[1:]]) == 2  # nothing to add: a clear error
    assert "needs the result files" in capsys.readouterr().err


def test_the_committed_page_is_what_the_committed_runs_give():
    changed = leaderboard.build(
        ROOT / "results" / "runs", ROOT / "docs" / "results.md", readme=ROOT / "README.md", check=True
    )
    assert changed == [], "run `edit-gym leaderboard` and commit the page"


def test_recorded_before_reuses_only_the_same_stream(tmp_path):
    runs = tmp_path / "runs"
    run = {**_run("memit", 0, 0.5, 0.5, 0.5), "before": {"efficacy": 0.1}}
    path = leaderboard.record_run(run, runs)
    cfg = dict(run["config"])
    assert leaderboard.recorded_before(runs, cfg, 0) == ({"efficacy": 0.1}, str(path))
    assert leaderboard.recorded_before(runs, cfg, 1) == (None, None)  # another order
    assert leaderboard.recorded_before(runs, cfg, 0, needs=("wild_efficacy_f1",)) == (None, None)
    assert leaderboard.recorded_before(runs, {**cfg, "known_only": False}, 0) == (None, None)
    assert leaderboard.recorded_before(tmp_path / "nowhere", cfg, 0) == (None, None)
    # what the env resolves the same: known_only None (the built-in facts: known ones only), the
    # candidates (the unedited model's scores do not depend on what is edited)
    same = {**cfg, "known_only": True, "candidates": ["model.layers.0.mlp.down_proj"]}
    assert leaderboard.recorded_before(runs, same, 0) == ({"efficacy": 0.1}, str(path))


def test_recorded_before_matches_a_data_file_named_relative_or_absolute(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cf.json").write_text("[]")
    monkeypatch.chdir(tmp_path / "data")
    run = {**_run("memit", 0, 0.5, 0.5, 0.5), "before": {"efficacy": 0.1}}
    run["config"] = {**run["config"], "dataset": str(tmp_path / "data" / "cf.json")}
    path = leaderboard.record_run(run, tmp_path / "runs")
    relative = {**run["config"], "dataset": "../data/cf.json"}
    assert leaderboard.recorded_before(tmp_path / "runs", relative, 0) == ({"efficacy": 0.1}, str(path))
    other = {**run["config"], "dataset": "other.json"}
    assert leaderboard.recorded_before(tmp_path / "runs", other, 0) == (None, None)


def test_the_unedited_row_takes_each_seeds_fullest_pre_edit_scores(tmp_path):
    runs = tmp_path / "runs"
    old = _run("alphaedit", 0, 0.5, 0.5, 0.5)  # rows and their runs are read in name order
    old["before"] = {"efficacy": 0.1, "generalization": 0.1, "specificity": 1.0}
    new = _run("memit", 0, 0.9, 0.6, 0.8)  # a later run that also scored the probabilities
    new["before"] = {**old["before"], "efficacy_score": 0.3}
    for run in (old, new):
        leaderboard.record_run(run, runs)
    (table,) = leaderboard.tables(leaderboard.load_runs(runs))
    assert table.before.cells["efficacy_score"][0] == pytest.approx(0.3)
    assert table.before.seeds == [0]
