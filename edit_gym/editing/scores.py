"""Teacher-forced scores read at answer positions, batched.

* accuracy: top-1 agreement of the model's prediction with each answer token (per pair: the
  fraction of its answer tokens that are right; per token when ``per_token=True``).
* reference: the pre-edit model's top-k next-token distribution at each answer position, kept
  to score specificity later without keeping the pre-edit weights.
* drift: KL(pre-edit || now) over the reference's top-k tokens plus one bucket for the rest
  (an exact KL between the two coarse-grained distributions, and a lower bound on the full KL),
  and top-1 agreement with the pre-edit prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edit_gym.tokens import PairEncoder, TokenBatch

REFERENCE_TOP_K = 32


# config fields of models whose output head is followed by a transformation of the logits; for
# them the head runs the model's own way (on every position)
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_logits_scaling")


def answer_logits(model: torch.nn.Module, mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
    """Logits (N, V) at the positions ``mask`` selects, in the model's dtype.

    Only the answer positions need the output head, so it runs on those N rows instead of every
    position (a B x T x V tensor); with a vocabulary of 49k and prompts of ~20 tokens that is most
    of the head's cost. Models whose logits are transformed after the head (soft-capping, scaling)
    or that expose no base model and head take the full forward.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "base_model", None)
    config = getattr(model, "config", None)
    plain = not any(getattr(config, name, None) not in (None, 1.0) for name in LOGIT_TRANSFORMS)
    if head is None or base is None or base is model or not plain:
        return model(**inputs).logits[mask]
    hidden = base(**inputs).last_hidden_state
    return head(hidden[mask])


def answer_logprobs(model: torch.nn.Module, batch: TokenBatch, *, grad: bool = False) -> torch.Tensor:
    """Log-probabilities (N, V) at the answer positions of ``batch``, float32.

    ``grad=True`` keeps the autograd graph (for losses differentiated with respect to weights).
    """
    with torch.set_grad_enabled(grad):
        logits = answer_logits(
            model, batch.answer_mask, input_ids=batch.input_ids, attention_mask=batch.attention_mask
        )
        return torch.log_softmax(logits.float(), dim=-1)


@dataclass
class Reference:
    """The pre-edit model's top-k distribution at each answer position of one pair."""

    ids: torch.Tensor  # (n, k) long
    logp: torch.Tensor  # (n, k) float32


def pair_slices(batch: TokenBatch) -> list[slice]:
    """For each pair of the batch, the slice of its rows among the answer positions."""
    counts = batch.answer_mask.sum(1).tolist()
    out, start = [], 0
    for c in counts:
        out.append(slice(start, start + c))
        start += c
    return out


def batched(model, encoder: PairEncoder, pairs: list[tuple[str, str]], batch_size: int, device):
    """Yield (indices into ``pairs``, their batch, its answer log-probs), pairs grouped by length.

    Pairs of similar length share a batch, so little of each batch is padding; callers put each
    result back at its index, so the order of their outputs is the order of ``pairs``.
    """
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        batch = encoder.encode([pairs[j] for j in idx], device=device)
        yield idx, batch, answer_logprobs(model, batch)


def accuracy(model, encoder, pairs, *, batch_size: int = 64, device="cpu") -> list[float]:
    """Per pair, the fraction of answer tokens predicted top-1 (teacher-forced)."""
    out = [0.0] * len(pairs)
    for idx, batch, logp in batched(model, encoder, pairs, batch_size, device):
        hits = (logp.argmax(-1) == batch.labels[batch.answer_mask]).float()
        for j, s in zip(idx, pair_slices(batch), strict=True):
            out[j] = float(hits[s].mean())
    return out


def references(model, encoder, pairs, *, k: int = REFERENCE_TOP_K, batch_size: int = 64, device="cpu"):
    """Per pair, the model's top-k distribution at each answer position (on the CPU)."""
    out: list[Reference | None] = [None] * len(pairs)
    for idx, batch, logp in batched(model, encoder, pairs, batch_size, device):
        top = logp.topk(k, dim=-1)
        for j, s in zip(idx, pair_slices(batch), strict=True):
            out[j] = Reference(top.indices[s].cpu(), top.values[s].cpu())
    return out


def drift_from_reference(logp: torch.Tensor, ref: Reference) -> tuple[float, float]:
    """(KL(reference || now) over top-k + rest, top-1 agreement) for one pair's answer rows."""
    ids, ref_logp = ref.ids.to(logp.device), ref.logp.to(logp.device)
    now = logp.gather(1, ids)
    p = ref_logp.exp()
    tail_p = (1.0 - p.sum(1)).clamp_min(1e-8)
    tail_q = (1.0 - now.exp().sum(1)).clamp_min(1e-8)
    kl = (p * (ref_logp - now)).sum(1) + tail_p * (tail_p.log() - tail_q.log())
    agree = (logp.argmax(-1) == ids[:, 0]).float()
    return float(kl.clamp_min(0).mean()), float(agree.mean())


def drift(model, encoder, pairs, refs: list[Reference], *, batch_size: int = 64, device="cpu"):
    """Per pair, (KL to the reference, agreement with the reference)."""
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(pairs)
    for idx, batch, logp in batched(model, encoder, pairs, batch_size, device):
        for j, s in zip(idx, pair_slices(batch), strict=True):
            out[j] = drift_from_reference(logp[s], refs[j])
    return out


def sequence_logprob(
    model, encoder, pairs, *, batch_size: int = 64, device="cpu", mean: bool = False
) -> list[float]:
    """Per pair, the summed (``mean=True``: mean per-token) log-probability of its answer tokens."""
    out = [0.0] * len(pairs)
    for idx, batch, logp in batched(model, encoder, pairs, batch_size, device):
        token = logp.gather(1, batch.labels[batch.answer_mask][:, None])[:, 0]
        for j, s in zip(idx, pair_slices(batch), strict=True):
            out[j] = float(token[s].mean() if mean else token[s].sum())
    return out
