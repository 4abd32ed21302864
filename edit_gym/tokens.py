"""Turning (prompt, answer) pairs into padded, teacher-forced batches.

Every score in edit-gym is read at the positions whose next-token prediction is an answer token:
position ``p`` of a sequence predicts token ``p + 1``. Answers are tokenized as a continuation
(with one leading space) and without special tokens, so " Paris" after "The capital of France is"
tokenizes as it would in running text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class EmptyAnswerError(ValueError):
    """An answer that tokenizes to no token at all."""


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # (B, S) long
    attention_mask: torch.Tensor  # (B, S) long
    answer_mask: torch.Tensor  # (B, S) bool: logits here predict an answer token
    labels: torch.Tensor  # (B, S) long: the answer token predicted at that position, 0 elsewhere
    owner: torch.Tensor  # (N,) long: which sequence each answer position belongs to

    @property
    def num_answer_tokens(self) -> int:
        return int(self.answer_mask.sum())


class PairEncoder:
    """Tokenizes prompts and answers once and remembers them (edit streams revisit the same text)."""

    def __init__(self, tokenizer, max_cache: int = 200_000) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[tuple[str, bool], list[int]] = {}
        self._max_cache = max_cache
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)

    def ids(self, text: str, *, answer: bool) -> list[int]:
        key = (text, answer)
        hit = self._cache.get(key)
        if hit is None:
            if answer:
                hit = list(self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"])
                if not hit:
                    raise EmptyAnswerError(f"answer {text!r} tokenizes to no token")
            else:
                hit = list(self.tokenizer(text)["input_ids"])
                if not hit:
                    raise EmptyAnswerError(f"prompt {text!r} tokenizes to no token")
            if len(self._cache) < self._max_cache:
                self._cache[key] = hit
        return hit

    def encode(self, pairs: list[tuple[str, str]], device: torch.device | str = "cpu") -> TokenBatch:
        """Right-padded batch of ``prompt + answer`` with the answer positions marked."""
        seqs, spans = [], []
        for prompt, answer in pairs:
            p, a = self.ids(prompt, answer=False), self.ids(answer, answer=True)
            seqs.append(p + a)
            spans.append((len(p) - 1, len(p) - 1 + len(a)))
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.bool)
        labels = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (seq, (start, stop)) in enumerate(zip(seqs, spans, strict=True)):
            ids[i, : len(seq)] = torch.tensor(seq)
            attn[i, : len(seq)] = 1
            mask[i, start:stop] = True
            labels[i, start:stop] = torch.tensor(seq[start + 1 : stop + 1])
        owner = torch.arange(len(seqs)).unsqueeze(1).expand_as(mask)[mask]
        return TokenBatch(
            ids.to(device), attn.to(device), mask.to(device), labels.to(device), owner.to(device)
        )
