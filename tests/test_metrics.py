"""Each metric on hand-made cases: a stub model that always predicts "previous token + 1"."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from edit_gym.data import EditRequest, Probe
from edit_gym.editing.scores import Reference, accuracy, drift_from_reference, sequence_logprob
from edit_gym.evaluation import mean_logprob, ngram_entropy, perplexity, score_requests
from edit_gym.tokens import PairEncoder

VOCAB = 12


class NextIdModel(torch.nn.Module):
    """Logits put all but a little mass on (token id + 1) mod VOCAB."""

    def forward(self, input_ids, attention_mask=None):
        logits = torch.full((*input_ids.shape, VOCAB), -4.0)
        logits.scatter_(2, ((input_ids + 1) % VOCAB)[..., None], 4.0)
        return SimpleNamespace(logits=logits)


class DigitTokenizer:
    """'3 4 5' -> [3, 4, 5]."""

    pad_token_id = 0
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [int(t) for t in text.split()]}


ENC = PairEncoder(DigitTokenizer())
MODEL = NextIdModel()


def test_teacher_forced_accuracy_per_prompt():
    # after "2" the model says 3 (right), after "3" it says 4 (answer is 5: wrong)
    assert accuracy(MODEL, ENC, [("1 2", "3 5"), ("4", "5 6 7")]) == [0.5, 1.0]


def test_scores_keep_the_order_of_pairs_across_length_sorted_batches():
    pairs = [("1 2 3 4 5", "6 8"), ("1", "2"), ("4 5 6", "9"), ("2", "3 4 5"), ("7 8", "9 1")]
    expected = [accuracy(MODEL, ENC, [p])[0] for p in pairs]
    assert expected == [0.5, 1.0, 0.0, 1.0, 0.5]  # (8 -> 9 right, 9 -> 10 not 1)
    assert accuracy(MODEL, ENC, pairs, batch_size=2) == expected
    logps = sequence_logprob(MODEL, ENC, pairs, batch_size=2)
    assert logps == [sequence_logprob(MODEL, ENC, [p])[0] for p in pairs]


def test_sequence_logprob_and_new_vs_true():
    right, wrong = sequence_logprob(MODEL, ENC, [("1 2", "3"), ("1 2", "7")])
    p_right = math.exp(4) / (math.exp(4) + (VOCAB - 1) * math.exp(-4))
    assert right == pytest.approx(math.log(p_right), rel=1e-4) and wrong < right
    req = EditRequest(
        prompt="1 2", subject="1", target_new="3", target_true="7", neighbourhood=(Probe("5", "6"),)
    )
    refs = [[Reference(torch.tensor([[6]]), torch.tensor([[0.0]]))]]  # the pre-edit model was sure of 6
    scores = score_requests(MODEL, ENC, [req], refs, "cpu")
    assert scores["efficacy"] == 1.0 and scores["new_vs_true"] == 1.0 and scores["specificity"] == 1.0
    assert "generalization" not in scores  # no paraphrases: not scored rather than scored 0
    assert scores["efficacy_score"] == 1.0
    assert "paraphrase_score" not in scores and "neighbourhood_score" not in scores  # nothing to score


# log p of the token the stub favours, and of any other token (8 nats lower)
LP_RIGHT = math.log(math.exp(4) / (math.exp(4) + (VOCAB - 1) * math.exp(-4)))
LP_WRONG = LP_RIGHT - 8.0


def test_mean_logprob_normalizes_by_answer_length():
    # "3 9" after "1 2": 3 right, then 9 wrong (the stub says 4)
    (mean,) = mean_logprob(MODEL, ENC, [("1 2", "3 9")])
    (total,) = sequence_logprob(MODEL, ENC, [("1 2", "3 9")])
    assert mean == pytest.approx((LP_RIGHT + LP_WRONG) / 2, rel=1e-4)
    assert total == pytest.approx(LP_RIGHT + LP_WRONG, rel=1e-4)
    pairs = [("1 2 3", "4"), ("1 2", "3 9"), ("6", "7 8 9"), ("5", "9")]
    assert mean_logprob(MODEL, ENC, pairs, batch_size=2) == [mean_logprob(MODEL, ENC, [p])[0] for p in pairs]


def test_counterfact_probability_scores_by_hand():
    a = EditRequest(
        prompt="1 2",
        subject="1",
        target_new="3 9",  # mean (right + wrong) / 2 = LP_RIGHT - 4; summed 2 LP_RIGHT - 8
        target_true="7",  # one wrong token: LP_RIGHT - 8 either way
        paraphrases=(
            "5 2",  # new: LP_RIGHT - 4 > true: LP_RIGHT - 8 -> win
            "6",  # new "3 9": wrong, wrong (LP_WRONG) < true "7": right (LP_RIGHT) -> lose
        ),
        neighbours=(
            Probe("4", "5"),  # own answer right (LP_RIGHT) > target_new "3 9" wrong, wrong -> win
            Probe("2", "9"),  # own answer wrong (LP_WRONG) < "3 9": LP_RIGHT - 4 -> lose
            Probe("5", "3 9"),  # answered by target_new: skipped
        ),
    )
    b = EditRequest(
        prompt="4 5",
        subject="4",
        target_new="7",  # wrong after 5 (LP_WRONG) < true "6" right -> lose
        target_true="6",
        paraphrases=("9 5",),  # the same -> lose
        # own "3 9": mean LP_RIGHT - 4 > "7": LP_WRONG -> win (summed 2 LP_RIGHT - 8 < LP_RIGHT - 8)
        neighbours=(Probe("1 2", "3 9"),),
    )
    c = EditRequest(  # no true target: skipped by every probability score
        prompt="2 3", subject="2", target_new="8", paraphrases=("3",), neighbours=(Probe("3", "4"),)
    )
    scores = score_requests(MODEL, ENC, [a, b, c], [[], [], []], "cpu")
    # a wins on mean log-probs but loses on summed ones (2 LP_RIGHT - 8 < LP_RIGHT - 8)
    assert scores["efficacy_score"] == 0.5
    assert scores["new_vs_true"] == 0.0
    assert scores["paraphrase_score"] == pytest.approx(1 / 3)
    assert scores["neighbourhood_score"] == pytest.approx(2 / 3)
    assert "specificity" not in scores  # no neighbourhood probes


def test_shared_neighbour_probes_are_scored_once(monkeypatch):
    """Requests of one relation share neighbour probes: each distinct pair is scored once, and the
    scores are those of scoring each request alone."""
    import edit_gym.evaluation as evaluation
    from edit_gym.evaluation import probability_scores

    shared = Probe("4", "5")
    a = EditRequest(prompt="1 2", subject="1", target_new="3", target_true="7", neighbours=(shared,))
    b = EditRequest(prompt="2 3", subject="2", target_new="3", target_true="6", neighbours=(shared,))
    seen = []
    real = evaluation.mean_logprob

    def counting(model, encoder, pairs, **kw):
        seen.extend(pairs)
        return real(model, encoder, pairs, **kw)

    monkeypatch.setattr(evaluation, "mean_logprob", counting)
    together = probability_scores(MODEL, ENC, [a, b], "cpu")
    assert len(seen) == len(set(seen)) == 6  # 2 x (prompt, new), (prompt, true); ("4", "5"), ("4", "3")
    alone = [probability_scores(MODEL, ENC, [r], "cpu") for r in (a, b)]
    for key in together:
        assert together[key] == pytest.approx((alone[0][key] + alone[1][key]) / 2)


def test_kl_to_reference_by_hand():
    logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0, 0.0]]), -1)
    ref_p = torch.tensor([[0.5, 0.25]])
    ref = Reference(torch.tensor([[1, 0]]), ref_p.log())
    kl, agree = drift_from_reference(logp, ref)
    q = logp.exp()[0]
    tail_q = 1 - q[1] - q[0]
    expected = 0.5 * math.log(0.5 / q[1]) + 0.25 * math.log(0.25 / q[0]) + 0.25 * math.log(0.25 / tail_q)
    assert kl == pytest.approx(float(expected), rel=1e-5)
    assert agree == 0.0  # the reference's top token (1) is not the current argmax (0)
    same = Reference(logp.topk(4).indices, logp.topk(4).values)
    assert drift_from_reference(logp, same) == pytest.approx((0.0, 1.0), abs=1e-6)


def test_ngram_entropy_by_hand():
    assert ngram_entropy([7, 7, 7, 7, 7]) == 0.0
    # 1 2 3 4: three distinct bigrams (log2 3 bits), two distinct trigrams (1 bit)
    assert ngram_entropy([1, 2, 3, 4]) == pytest.approx((2 / 3 * math.log2(3) + 4 / 3 * 1.0) / 2)


def test_perplexity_of_a_uniform_model():
    class Uniform(torch.nn.Module):
        def forward(self, input_ids):
            return SimpleNamespace(logits=torch.zeros(*input_ids.shape, VOCAB))

    assert perplexity(Uniform(), [[1, 2, 3, 4], [5, 6, 7, 8]], "cpu") == pytest.approx(VOCAB, rel=1e-5)
    assert perplexity(MODEL, [[1, 2, 3, 4]], "cpu") < 1.01  # the stub is almost sure of every next id


def test_seed_interval_matches_a_hand_computation():
    from edit_gym.stats import interval

    mean, half = interval([1.0, 2.0, 3.0])  # sd 1, n 3, t(2) = 4.303
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert interval([5.0]) == (5.0, 0.0)
    assert interval([1.0] * 40)[1] == 0.0


def test_head_on_answer_rows_equals_the_full_forward():
    """The output head run on the answer positions only gives the full forward's logits there."""
    import gymnasium as gym

    from edit_gym.editing.capture import capture
    from edit_gym.editing.scores import answer_logprobs

    env = gym.make("LifelongEdit-Tiny-v0", num_edits=2).unwrapped
    env.reset(seed=0)
    reqs = env.stream
    batch = env.encoder.encode(
        [(r.prompt, r.target_new) for r in reqs] + [(p.prompt, p.answer) for p in reqs[0].neighbourhood]
    )
    full = torch.log_softmax(
        env.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        .logits[batch.answer_mask]
        .float(),
        -1,
    )
    assert torch.allclose(answer_logprobs(env.model, batch), full, atol=1e-5)
    cap = capture(env.model, env.candidates, batch)
    loss = torch.nn.functional.cross_entropy(full, batch.labels[batch.answer_mask], reduction="none")
    assert torch.allclose(cap.token_loss, loss, atol=1e-5)
