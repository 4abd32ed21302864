import json

import pytest

from edit_gym.data import (
    EditRequest,
    InvalidRecordError,
    builtin_requests,
    load_requests,
    requests_from_records,
)
from edit_gym.data.builtin import load_fact_table
from edit_gym.data.loaders import KNOWEDIT_NEIGHBOURS


def test_builtin_fact_set():
    reqs = builtin_requests()
    relations, rows = load_fact_table()
    assert len(reqs) == len(rows) >= 500
    assert len({r.uid for r in reqs}) == len(reqs)
    objects = {}
    for _, rel, obj in rows:
        objects.setdefault(rel, set()).add(obj)
    for r in reqs:
        assert r.subject in r.prompt and r.target_new != r.target_true
        assert r.target_new in objects[r.relation]  # same relation: CounterFact style
        assert len(r.paraphrases) == 3 and all(r.subject.lower() in p.lower() for p in r.paraphrases)
        assert len(r.neighbourhood) == 3 and all(r.subject not in p.prompt for p in r.neighbourhood)
        assert r.neighbours == r.neighbourhood  # other subjects of the same relation, true answers
    assert builtin_requests() == reqs  # deterministic


def test_builtin_train_test_split_is_disjoint_by_subject():
    everything = builtin_requests("facts")
    train, test = load_requests("facts-train"), load_requests("facts-test")
    assert len(train) + len(test) == len(everything)
    assert 0.2 < len(test) / len(everything) < 0.4
    subjects = lambda reqs: {r.uid.split(":", 1)[1] for r in reqs}  # noqa: E731
    assert not subjects(train) & subjects(test)
    assert set(train) | set(test) == set(everything)  # same requests (same targets) as in "facts"


def test_builtin_questions_are_the_facts_asked_as_questions():
    """The zsRE-style set: the same facts, targets and subject split as the cloze form, each prompt
    (and paraphrase, and neighbour) a question in the frame, answered right after "Answer:"."""
    for cloze_name, question_name in [("facts", "questions"), ("facts-test", "questions-test")]:
        cloze, questions = load_requests(cloze_name), load_requests(question_name)
        assert [(r.uid, r.target_new, r.target_true) for r in cloze] == [
            (r.uid, r.target_new, r.target_true) for r in questions
        ]
    for r in load_requests("questions"):
        assert r.prompt.startswith("Question: ") and r.prompt.endswith("?\nAnswer:")
        assert r.subject in r.prompt
        assert not any(p.startswith("Question: the ") for p in r.paraphrases)  # a sentence opens capitalised
        assert len(r.paraphrases) == 2 and all(
            p.endswith("?\nAnswer:") and r.subject in p for p in r.paraphrases
        )
        assert all(n.prompt.startswith("Question: ") and r.subject not in n.prompt for n in r.neighbours)
    train = {r.uid.split(":", 1)[1] for r in load_requests("questions-train")}
    assert not train & {r.uid.split(":", 1)[1] for r in load_requests("questions-test")}


def test_knowedit_and_rome_files(shared_data):
    test = load_requests(str(shared_data / "knowedit_counterfact_test.json"))
    train = load_requests(str(shared_data / "knowedit_counterfact_train.json"))
    rome = load_requests(str(shared_data / "multi_counterfact_sample.json"))
    assert (len(test), len(train), len(rome)) == (839, 1427, 7)
    first = test[0]
    assert first.subject == "Leonardo DiCaprio" and first.target_new == "Syria"
    assert first.target_true == "United States of America" and first.paraphrases
    assert first.neighbourhood[0].answer == "Irmelin DiCaprio"  # first alias of the first group
    assert rome[0].prompt == "The mother tongue of Danielle Darrieux is" and rome[0].target_new == "English"
    assert all(p.answer == "French" for p in rome[0].neighbourhood)
    # ROME neighbourhood prompts are other subjects under the same relation: also the neighbours
    assert rome[0].neighbours == rome[0].neighbourhood and rome[0].neighbours
    assert all(r.neighbours == r.neighbourhood for r in rome)


def test_knowedit_shared_file_neighbours(shared_data):
    test = load_requests(str(shared_data / "knowedit_counterfact_test.json"))
    assert len({r.relation for r in test}) == 35
    assert sum(bool(r.neighbours) for r in test) >= 835
    by_prompt: dict[str, list[EditRequest]] = {}  # a few prompts occur in two records
    for r in test:
        by_prompt.setdefault(r.prompt, []).append(r)
    for r in test:
        assert r.relation == r.prompt.replace(r.subject, "{}", 1)
        assert len(r.neighbours) <= KNOWEDIT_NEIGHBOURS
        for n in r.neighbours:
            # another record's prompt, answered by its ground truth
            assert any(
                o.relation == r.relation and o.subject != r.subject and o.target_true == n.answer
                for o in by_prompt[n.prompt]
            )
            assert r.subject not in n.prompt
    # relation specificity (same subject, other relations) stays the neighbourhood
    assert test[0].subject in test[0].neighbourhood[0].prompt


def _knowedit(subject: str, truth: str | None, new: str = "Rome", template: str = "The capital of {} is"):
    rec = {"subject": subject, "prompt": template.format(subject), "target_new": new}
    if truth is not None:
        rec["ground_truth"] = truth
    return rec


def test_knowedit_neighbours_same_relation_same_truth_first_capped(tmp_path):
    names = [f"Land {chr(65 + i)}" for i in range(16)]  # Land A .. Land P
    records = [_knowedit(names[0], "Paris")]
    records += [_knowedit(n, "Paris") for n in names[1:4]]  # same relation, same truth
    records += [_knowedit(n, f"City {i}") for i, n in enumerate(names[4:14])]  # same relation
    records += [
        _knowedit(names[14], "Rome"),  # true object = the request's target_new: not scorable
        _knowedit(names[15], None),  # no ground truth: no answer to ask for
        _knowedit(names[0], "Paris", new="Oslo"),  # the same subject again
        _knowedit(names[1], "French", template="The language of {} is"),  # another relation
        {"src": "Who?", "subject": "Who", "alt": "x", "answers": ["y"]},  # another format
    ]
    reqs = requests_from_records(records)
    first = reqs[0]
    assert first.relation == "The capital of {} is"
    assert len(first.neighbours) == KNOWEDIT_NEIGHBOURS == 10  # 13 candidates, capped
    prompts = [n.prompt for n in first.neighbours]
    assert len(set(prompts)) == len(prompts)
    assert {n.prompt for n in first.neighbours[:3]} == {f"The capital of {n} is" for n in names[1:4]}
    assert all(n.answer == "Paris" for n in first.neighbours[:3])  # same ground truth first
    assert all(n.answer.startswith("City ") for n in first.neighbours[3:])
    for n in first.neighbours:
        assert names[0] not in n.prompt and n.prompt.startswith("The capital of ")
        assert n.answer != "Rome"
    by_prompt = {r.prompt: r.target_true for r in reqs}
    assert all(by_prompt[n.prompt] == n.answer for r in reqs for n in r.neighbours)
    assert reqs[-2].neighbours == ()  # the only record of its relation
    assert reqs[-1].neighbours == () and reqs[-1].relation is None  # zsRE: not built
    assert reqs[15].neighbours  # a record without ground truth still gets neighbours
    # deterministic: the same on a second conversion, from a file and through the datasets library
    assert requests_from_records(records) == reqs
    assert [r.neighbours for r in requests_from_records(records)] == [r.neighbours for r in reqs]
    knowedit_only = records[:-1]
    path = tmp_path / "edits.json"
    path.write_text(json.dumps(knowedit_only))
    from_file = load_requests(str(path))
    assert [r.neighbours for r in from_file] == [r.neighbours for r in reqs[:-1]]
    folder = tmp_path / "hub_like"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps(knowedit_only))
    from_datasets = load_requests(str(folder))
    assert [r.neighbours for r in from_datasets] == [r.neighbours for r in from_file]


def test_zsre_record():
    rec = {
        "subject": "Watts Humphrey",
        "src": "What university did Watts Humphrey attend?",
        "alt": "University of Michigan",
        "answers": ["Illinois Institute of Technology"],
        "rephrase": "What university did Watts Humphrey take part in?",
        "loc": "nq question: who played desmond doss father in hacksaw ridge",
        "loc_ans": "Hugo Weaving",
    }
    (req,) = requests_from_records([rec])
    assert req.target_new == "University of Michigan" and req.paraphrases == (rec["rephrase"],)
    assert req.neighbourhood[0].answer == "Hugo Weaving"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "The capital of France is", "target_new": "Rome"}, "missing field 'subject'"),
        ({"subject": "Spain", "prompt": "The capital of France is", "target_new": "Rome"}, "does not occur"),
        ({"subject": "France", "prompt": "The capital of France is", "target_new": "  "}, "'target_new'"),
        (
            {
                "requested_rewrite": {
                    "prompt": "no slot",
                    "subject": "X",
                    "target_new": {"str": "a"},
                    "target_true": {"str": "b"},
                }
            },
            "no '{}'",
        ),
        ({"src": "Who?", "subject": "Who", "answers": ["x"]}, "missing field 'alt'"),
    ],
)
def test_malformed_records_name_record_and_field(record, message):
    with pytest.raises(InvalidRecordError, match="record 1") as err:
        requests_from_records([{"subject": "a", "prompt": "a b", "target_new": "c"}, record], source="mine")
    assert message in str(err.value) and "mine" in str(err.value)


def test_request_strips_targets():
    r = EditRequest(
        prompt="The capital of France is", subject="France", target_new=" Rome", target_true=" Paris"
    )
    assert (r.target_new, r.target_true) == ("Rome", "Paris")


def test_jsonl_and_datasets_folder(tmp_path):
    recs = [
        {
            "subject": "France",
            "prompt": "The capital of France is",
            "target_new": "Rome",
            "ground_truth": "Paris",
        }
    ]
    jsonl = tmp_path / "edits.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in recs))
    assert load_requests(str(jsonl))[0].target_new == "Rome"
    folder = tmp_path / "hub_like"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps(recs))
    assert load_requests(str(folder))[0].target_true == "Paris"  # read through the datasets library


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="unknown dataset 'no-such/dataset-xyz'"):
        load_requests("no-such/dataset-xyz")
