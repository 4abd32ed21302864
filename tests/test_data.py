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
    assert builtin_requests() == reqs  # deterministic


def test_builtin_train_test_split_is_disjoint_by_subject():
    everything = builtin_requests("facts")
    train, test = load_requests("facts-train"), load_requests("facts-test")
    assert len(train) + len(test) == len(everything)
    assert 0.2 < len(test) / len(everything) < 0.4
    subjects = lambda reqs: {r.uid.split(":", 1)[1] for r in reqs}  # noqa: E731
    assert not subjects(train) & subjects(test)
    assert set(train) | set(test) == set(everything)  # same requests (same targets) as in "facts"


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
