"""Episode-level metrics and the protocol every number carries (design.md §5).

* efficacy / generalization: teacher-forced token top-1 of ``target_new`` on the edit prompts /
  their paraphrases (per prompt: the fraction of answer tokens right; then the mean).
* specificity: top-1 agreement with the pre-edit model on the ``neighbourhood`` prompts. What it
  measures depends on the data: for KnowEdit CounterFact the neighbourhood is the same subject
  under other relations, so it is *relation specificity*; for ROME ``multi_counterfact`` and the
  built-in facts it is other subjects under the same relation; for zsRE unrelated questions.
* new_vs_true: fraction of requests where p(target_new | prompt) > p(target_true | prompt), with
  summed answer-token log-probabilities (requests without a true target are skipped).
* counterfact probability scores (MEMIT / AlphaEdit tables), with the mean per-token
  log-probability of an answer (length-normalized, as MEMIT's ``compute_rewrite_quality_counterfact``
  compares average NLLs), over requests with a true target:
  ``efficacy_score``: fraction of requests with p(target_new | prompt) > p(target_true | prompt);
  ``paraphrase_score``: the same over every paraphrase prompt;
  ``neighbourhood_score``: fraction of ``neighbours`` probes (other subjects, same relation) with
  p(own true object | probe) > p(target_new | probe).
* retention: efficacy of every earlier edit measured after the whole stream (``final`` timing);
  ``retention_first_n``: the same for the first N edits of the stream.
* fluency: weighted bi-/tri-gram entropy (ROME's 2/3, 4/3 weights) of greedy generations.
* perplexity: of the pre-edit model's own held-out samples (a general-ability probe: it rises as
  edits drift the model away from what it did before).

Timings: ``immediate`` scores are read right after each edit (in each step's ``info``), ``final``
scores after the whole stream.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from edit_gym.data.request import EditRequest
from edit_gym.editing.scores import Reference, accuracy, drift, sequence_logprob
from edit_gym.tokens import PairEncoder

PROTOCOL = {
    "scoring": "teacher-forced token top-1 (per prompt mean over answer tokens, then mean over prompts)",
    "specificity": (
        "top-1 agreement with the pre-edit model on neighbourhood prompts; for KnowEdit CounterFact "
        "(locality.Relation_Specificity) these ask the same subject under other relations: relation "
        "specificity; for ROME multi_counterfact and the built-in facts other subjects under the same "
        "relation; for zsRE unrelated questions"
    ),
    "new_vs_true": "p(target_new) > p(target_true), summed answer-token log-probabilities",
    "efficacy_score": (
        "counterfact probability score (MEMIT/AlphaEdit tables): fraction of requests with "
        "p(target_new | prompt) > p(target_true | prompt), mean per-token answer log-probabilities; "
        "requests without a true target skipped"
    ),
    "paraphrase_score": (
        "counterfact probability score (MEMIT/AlphaEdit tables): fraction of paraphrase prompts with "
        "p(target_new) > p(target_true), mean per-token answer log-probabilities; requests without a "
        "true target skipped"
    ),
    "neighbourhood_score": (
        "counterfact probability score (MEMIT/AlphaEdit tables): fraction of neighbour prompts (other "
        "subjects, same relation) with p(their true object) > p(target_new), mean per-token answer "
        "log-probabilities; requests without a true target, and probes answered by target_new, skipped"
    ),
    "fluency": "weighted 2-/3-gram entropy of 32-token greedy generations from the edit prompts",
    "perplexity": "of 32 x 48 tokens sampled from the pre-edit model (seed 5678)",
}
FIRST_N = 10


def score_requests(
    model: torch.nn.Module,
    encoder: PairEncoder,
    requests: list[EditRequest],
    references: list[list[Reference]],
    device,
) -> dict[str, float]:
    """Efficacy, generalization, specificity and new-vs-true success of the current weights.

    Also CounterFact's probability scores (``efficacy_score``, ``paraphrase_score``,
    ``neighbourhood_score``: see :data:`PROTOCOL`), each present only when it has something to score.
    """
    if not requests:
        return {}
    efficacy = accuracy(model, encoder, [(r.prompt, r.target_new) for r in requests], device=device)
    out = {"efficacy": float(np.mean(efficacy)), "retention_first_n": float(np.mean(efficacy[:FIRST_N]))}
    para = [(p, r.target_new) for r in requests for p in r.paraphrases]
    if para:
        out["generalization"] = float(np.mean(accuracy(model, encoder, para, device=device)))
    probes = [(p.prompt, p.answer) for r in requests for p in r.neighbourhood]
    if probes:
        refs = [ref for rs in references for ref in rs]
        out["specificity"] = float(
            np.mean([a for _, a in drift(model, encoder, probes, refs, device=device)])
        )
    with_true = [r for r in requests if r.target_true]
    if with_true:
        new = sequence_logprob(model, encoder, [(r.prompt, r.target_new) for r in with_true], device=device)
        true = sequence_logprob(model, encoder, [(r.prompt, r.target_true) for r in with_true], device=device)
        out["new_vs_true"] = float(np.mean([n > t for n, t in zip(new, true, strict=True)]))
        out.update(probability_scores(model, encoder, with_true, device=device))
    return out


@torch.no_grad()
def mean_logprob(model, encoder, pairs, *, batch_size: int = 64, device="cpu") -> list[float]:
    """Per pair, the mean per-token log-probability of its answer tokens (teacher-forced)."""
    return sequence_logprob(model, encoder, pairs, batch_size=batch_size, device=device, mean=True)


def probability_scores(model, encoder, requests: list[EditRequest], device) -> dict[str, float]:
    """CounterFact's efficacy / paraphrase / neighbourhood scores (mean per-token log-probs).

    Requests without ``target_true`` are skipped, and so are neighbour probes whose answer is the
    request's ``target_new`` (the two probabilities would be one). All distinct pairs go through
    one batched call.
    """
    requests = [r for r in requests if r.target_true]
    # (score name, the pair that should win, the pair it is compared with)
    comparisons: list[tuple[str, tuple[str, str], tuple[str, str]]] = []
    for r in requests:
        comparisons.append(("efficacy_score", (r.prompt, r.target_new), (r.prompt, r.target_true)))
        comparisons += [("paraphrase_score", (p, r.target_new), (p, r.target_true)) for p in r.paraphrases]
        comparisons += [
            ("neighbourhood_score", (n.prompt, n.answer), (n.prompt, r.target_new))
            for n in r.neighbours
            if n.answer.strip() != r.target_new
        ]
    if not comparisons:
        return {}
    # requests of one relation share neighbour probes: each distinct pair is scored once (over the
    # 839 CounterFact test records that is 57% of the pairs)
    unique = list(dict.fromkeys(pair for _, win, lose in comparisons for pair in (win, lose)))
    logp = dict(zip(unique, mean_logprob(model, encoder, unique, device=device), strict=True))
    wins: dict[str, list[bool]] = {}
    for name, win, lose in comparisons:
        wins.setdefault(name, []).append(logp[win] > logp[lose])
    return {name: float(np.mean(w)) for name, w in wins.items()}


def ngram_entropy(
    tokens: list[int], ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)
) -> float:
    """Weighted mean of n-gram entropies (bits) of one token sequence (ROME's fluency measure)."""
    values = []
    for n in ns:
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(grams.values())
        values.append(-sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0)
    return float(np.average(values, weights=weights))


@torch.no_grad()
@torch.no_grad()
def greedy_continuations(
    model, tokenizer, prompts: list[str], device, max_new_tokens: int
) -> list[list[int]]:
    """Token ids of the greedy continuation of each prompt (one batch, left-padded)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    finally:
        tokenizer.padding_side = side
    gen = model.generate(
        **enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
    )
    return gen[:, enc["input_ids"].shape[1] :].tolist()


def fluency(model, tokenizer, prompts: list[str], device, max_new_tokens: int = 32) -> float:
    """Mean n-gram entropy of greedy continuations of ``prompts``."""
    new = greedy_continuations(model, tokenizer, prompts, device, max_new_tokens)
    return float(np.mean([ngram_entropy(seq) for seq in new]))


@torch.no_grad()
def perplexity(model, samples: list[list[int]], device, batch_size: int = 16) -> float:
    """exp(mean next-token NLL) of the model on token sequences of equal length."""
    total, count = 0.0, 0
    for i in range(0, len(samples), batch_size):
        ids = torch.tensor(samples[i : i + batch_size], device=device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="sum")
        total += float(nll)
        count += ids[:, 1:].numel()
    return math.exp(total / max(count, 1))
