"""FT-L: norm-constrained fine-tuning of the selected matrices (the field's fine-tuning baseline).

ROME's FT-L / EasyEdit's ``FT``: Adam on the selected weight matrices for a fixed number of steps,
loss = the target's mean token NLL given the edit prompt, and after every step each entry is
clamped to within ``norm_constraint`` of its value before the edit (an L-infinity ball).
"""

from __future__ import annotations

import torch

from edit_gym.candidates import Candidate
from edit_gym.editing.scores import answer_logits
from edit_gym.tokens import TokenBatch


def finetune_step(
    model: torch.nn.Module,
    candidates: list[Candidate],
    batch: TokenBatch,
    *,
    steps: int,
    lr: float,
    norm_constraint: float,
) -> dict:
    """Fine-tune ``candidates`` in place on ``batch``; returns the loss before and after, and a fault."""
    params = [c.param for c in candidates]
    start = [p.detach().clone() for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    labels = batch.labels[batch.answer_mask]
    lengths = batch.answer_mask.sum(1).clamp_min(1).float()
    seq_of_token = batch.answer_mask.nonzero()[:, 0]
    first = last = float("nan")
    fault = ""
    try:
        with torch.enable_grad():
            for it in range(steps):
                logits = answer_logits(
                    model, batch.answer_mask, input_ids=batch.input_ids, attention_mask=batch.attention_mask
                )
                nll = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
                per_seq = torch.zeros(batch.input_ids.shape[0], device=nll.device).index_add(
                    0, seq_of_token, nll
                )
                loss = (per_seq / lengths).mean()
                if not torch.isfinite(loss):
                    fault = f"fine-tuning loss is not finite at step {it}"
                    break
                first = float(loss.detach()) if it == 0 else first
                last = float(loss.detach())
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for p, s in zip(params, start, strict=True):
                        p.copy_(torch.clamp(p, s - norm_constraint, s + norm_constraint))
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    return {"loss_first": first, "loss_last": last, "fault": fault}
