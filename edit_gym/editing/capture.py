"""One forward+backward pass that yields, for every candidate, its keys and value-gradients.

For request answer positions the pass records, per candidate matrix ``W_l`` (d_out x d_in):
``K_l`` (N x d_in), the inputs the matrix sees, and ``G_l`` (N x d_out), the gradient of the
summed answer cross-entropy with respect to the matrix's outputs. ``K_l^T G_l`` is the plain
fine-tuning gradient; every update rule is a function of (K_l, G_l). Parameters stay frozen:
the graph starts at the input embeddings, so no weight ``.grad`` is ever allocated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from edit_gym.candidates import Candidate
from edit_gym.editing.scores import answer_logits
from edit_gym.tokens import TokenBatch


@dataclass
class EditCapture:
    keys: list[torch.Tensor]  # per candidate, (N, d_in) float32
    grads: list[torch.Tensor]  # per candidate, (N, d_out) float32
    token_loss: torch.Tensor  # (N,) cross-entropy of each answer token, float32
    correct: torch.Tensor  # (N,) bool, teacher-forced top-1 hit before the edit
    owner: torch.Tensor  # (N,) which request of the batch each answer token belongs to

    @property
    def loss(self) -> float:
        """Mean answer-token cross-entropy."""
        return float(self.token_loss.mean())


def capture(model: torch.nn.Module, candidates: list[Candidate], batch: TokenBatch) -> EditCapture:
    """Run the model once forward and once backward on ``batch`` and collect (K_l, G_l)."""
    mask = batch.answer_mask
    inputs: list[torch.Tensor | None] = [None] * len(candidates)
    outputs: list[torch.Tensor | None] = [None] * len(candidates)

    def make_hook(i: int):
        def hook(_module, args, output):
            inputs[i] = args[0].detach()[mask]
            output.retain_grad()
            outputs[i] = output

        return hook

    handles = [c.module.register_forward_hook(make_hook(i)) for i, c in enumerate(candidates)]
    try:
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
            logits = answer_logits(model, mask, inputs_embeds=embeds, attention_mask=batch.attention_mask)
            logits = logits.float()
            token_loss = torch.nn.functional.cross_entropy(logits, batch.labels[mask], reduction="none")
            token_loss.sum().backward()
    finally:
        for h in handles:
            h.remove()
    grads = []
    for i, out in enumerate(outputs):
        if out is None or out.grad is None:
            raise RuntimeError(f"candidate {candidates[i].name!r} was not reached by the forward pass")
        grads.append(out.grad[mask].float())
    return EditCapture(
        keys=[k.float() for k in inputs],
        grads=grads,
        token_loss=token_loss.detach(),
        correct=(logits.argmax(-1) == batch.labels[mask]).detach(),
        owner=batch.owner,
    )


@contextmanager
def module_inputs(
    modules: Sequence[torch.nn.Module], consume: Callable[[int, torch.Tensor], None]
) -> Iterator[None]:
    """Within the block, each forward of ``modules[j]`` hands its input, flattened to a float32
    (tokens x d_in) matrix, to ``consume(j, keys)`` (e.g. to sum k k^T for C0, or to keep the rows)."""

    def hook(j: int):
        def fn(_module, args, _output):
            consume(j, args[0].reshape(-1, args[0].shape[-1]).float())

        return fn

    handles = [m.register_forward_hook(hook(j)) for j, m in enumerate(modules)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
