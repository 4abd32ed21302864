"""Where ROME, MEMIT and AlphaEdit read an edit's keys: the subject's last token, over context prefixes.

Two key sites exist in this package:

* **subject** (this module; ROME / MEMIT / AlphaEdit ``compute_ks``): the input of the edited matrix
  at the subject's last token of the edit prompt, under each context template
  (:mod:`edit_gym.editing.prefixes`), averaged as MEMIT does: the mean over the prefixed prompts
  and the plain prompt weigh one half each.
* **answer** (:mod:`edit_gym.editing.capture`; MALMEN / RLEdit): the matrix input at every
  position that predicts an answer token, with the value-gradients there.

:class:`SiteBatch` is the tokenized step every stage shares: for each request, one sequence per
context template (``template(prompt) + target``, teacher-forced) and, for the target's KL term,
``"{subject} is a"``; with the subject's last-token position of each sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edit_gym.data.request import EditRequest, InvalidRecordError
from edit_gym.tokens import PairEncoder

KL_PROMPT = "{} is a"  # MEMIT / ROME's KL prompt; the KL is read at the subject's last token


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the layers that matter have run."""


@dataclass
class SiteBatch:
    """Sequences of one step, right-padded; rewrite sequences first, then one KL sequence per request."""

    input_ids: torch.Tensor  # (B, S)
    attention_mask: torch.Tensor  # (B, S)
    answer_mask: torch.Tensor  # (B, S) positions predicting a target token (rewrite sequences only)
    labels: torch.Tensor  # (B, S)
    lookup: torch.Tensor  # (B,) the subject's last token in each sequence
    owner: torch.Tensor  # (B,) request index of each sequence
    plain: torch.Tensor  # (n,) the plain-template (no prefix) sequence of each request
    num_templates: int
    num_requests: int

    @property
    def num_rewrite(self) -> int:
        return self.num_requests * self.num_templates

    def rewrite_only(self) -> SiteBatch:
        """The same batch without the KL sequences (for reading keys and hidden states)."""
        r = self.num_rewrite
        return SiteBatch(
            self.input_ids[:r],
            self.attention_mask[:r],
            self.answer_mask[:r],
            self.labels[:r],
            self.lookup[:r],
            self.owner[:r],
            self.plain,
            self.num_templates,
            self.num_requests,
        )


def _subject_last_token(tokenizer, text: str, start: int, end: int, where: str) -> tuple[list[int], int]:
    """Token ids of ``text`` and the index of the token holding character ``end - 1`` (the subject's last)."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        hits = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
        if hits:
            return ids, hits[-1]
    else:  # MEMIT's way: the length of the tokenized text up to the subject's end
        ids = list(tokenizer(text)["input_ids"])
        idx = len(tokenizer(text[:end])["input_ids"]) - 1
        if 0 <= idx < len(ids):
            return ids, idx
    raise InvalidRecordError(f"{where}: the subject does not map to any token of {text!r}")


def build_sites(encoder: PairEncoder, requests: list[EditRequest], templates: list[str], device) -> SiteBatch:
    """Tokenize a step: every request under every template, plus its KL prompt (see the module doc).

    A request whose subject does not occur in its prompt, or whose target tokenizes to nothing, is
    refused with an :class:`~edit_gym.data.InvalidRecordError` naming the record.
    """
    if not templates or templates[0] != "{}":
        raise ValueError("templates must start with the plain prompt '{}'")
    tok = encoder.tokenizer
    seqs: list[list[int]] = []
    spans: list[tuple[int, int]] = []
    lookup: list[int] = []
    owner: list[int] = []
    for i, r in enumerate(requests):
        where = f"record {r.uid!r}" if r.uid else f"request {i}"
        at = r.prompt.find(r.subject)
        if at < 0:
            raise InvalidRecordError(f"{where}: field 'subject' ({r.subject!r}) does not occur in its prompt")
        try:
            answer = encoder.ids(r.target_new, answer=True)
        except ValueError as err:
            raise InvalidRecordError(f"{where}: field 'target_new': {err}") from None
        for t in templates:
            head = t.split("{}", 1)[0]
            text = t.replace("{}", r.prompt, 1)
            ids, idx = _subject_last_token(tok, text, len(head) + at, len(head) + at + len(r.subject), where)
            seqs.append(ids + answer)
            spans.append((len(ids) - 1, len(ids) - 1 + len(answer)))
            lookup.append(idx)
            owner.append(i)
    for i, r in enumerate(requests):
        where = f"record {r.uid!r}" if r.uid else f"request {i}"
        text = KL_PROMPT.format(r.subject)
        ids, idx = _subject_last_token(tok, text, 0, len(r.subject), where)
        seqs.append(ids)
        spans.append((0, 0))
        lookup.append(idx)
        owner.append(i)
    width = max(len(s) for s in seqs)
    b = len(seqs)
    ids_t = torch.full((b, width), encoder.pad_id, dtype=torch.long)
    attn = torch.zeros((b, width), dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.bool)
    labels = torch.zeros((b, width), dtype=torch.long)
    for row, (seq, (start, stop)) in enumerate(zip(seqs, spans, strict=True)):
        ids_t[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
        if stop > start:
            mask[row, start:stop] = True
            labels[row, start:stop] = torch.tensor(seq[start + 1 : stop + 1])
    n, t = len(requests), len(templates)
    return SiteBatch(
        ids_t.to(device),
        attn.to(device),
        mask.to(device),
        labels.to(device),
        torch.tensor(lookup, device=device),
        torch.tensor(owner, device=device),
        torch.arange(n, device=device) * t,
        t,
        n,
    )


def average_over_templates(rows: torch.Tensor, num_requests: int, num_templates: int) -> torch.Tensor:
    """(n * T, d) rows in request-major order -> (n, d): MEMIT's average (plain half, prefixes half)."""
    rows = rows.reshape(num_requests, num_templates, -1)
    if num_templates == 1:
        return rows[:, 0]
    return 0.5 * rows[:, 0] + 0.5 * rows[:, 1:].mean(1)


@torch.no_grad()
def read_sites(
    model: torch.nn.Module,
    sites: SiteBatch,
    key_modules: list[torch.nn.Module],
    block: torch.nn.Module,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One forward (stopped after ``block``): the subject keys of each module, and ``block``'s output.

    Returns per module the (n, d_in) keys averaged over the templates, and the (n, d) hidden state
    at ``block``'s output at the subject's last token of each request's plain prompt (MEMIT's
    ``cur_zs``). Every module must sit at or below ``block``.
    """
    rw = sites.rewrite_only()
    rows = torch.arange(rw.input_ids.shape[0], device=rw.input_ids.device)
    keys: list[torch.Tensor | None] = [None] * len(key_modules)
    hidden: list[torch.Tensor] = []

    def key_hook(j: int):
        def hook(_m, args, _out):
            keys[j] = args[0][rows, rw.lookup].float()

        return hook

    def block_hook(_m, _args, out):
        h = out[0] if isinstance(out, tuple) else out
        hidden.append(h[rw.plain, rw.lookup[rw.plain]].float())
        raise StopForward

    handles = [m.register_forward_hook(key_hook(j)) for j, m in enumerate(key_modules)]
    handles.append(block.register_forward_hook(block_hook))
    try:
        model(input_ids=rw.input_ids, attention_mask=rw.attention_mask)
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    if not hidden or any(k is None for k in keys):
        raise RuntimeError("a key module was not reached before the target block")
    return [average_over_templates(k, sites.num_requests, sites.num_templates) for k in keys], hidden[0]
