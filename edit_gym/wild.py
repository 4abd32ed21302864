"""Generation-based ("in the wild") evaluation of edited language models.

Most editing metrics are teacher-forced: the target tokens are fed to the model and one checks
that each is the top-1 (or more likely than the old answer). *The Mirage of Model Editing*
(Yang et al., arXiv 2502.11177) shows that such scores overstate how well edits work in practice,
where the model must *produce* the answer itself. This module implements their protocol in a
self-contained form:

1. decode greedily from the question alone (no target tokens in the context);
2. cut the continuation at its natural end (:func:`natural_stop`: first line / first sentence);
3. compare the answer with the target by SQuAD exact match and token F1
   (:func:`exact_match`, :func:`token_f1`).

:func:`wild_scores` does this for the edit prompts (efficacy), their paraphrases (generalization)
and for unrelated locality prompts, whose generations are compared with those of the pre-edit
model (:func:`reference_generations`) instead of a gold answer (specificity).

The module is not imported by ``import edit_gym``; import it as ``edit_gym.wild``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

__all__ = [
    "WILD_PROTOCOL",
    "exact_match",
    "generate_answers",
    "natural_stop",
    "normalize_answer",
    "reference_generations",
    "settled",
    "token_f1",
    "wild_scores",
]

# --------------------------------------------------------------------------------------------
# Cutting a continuation at its natural end
# --------------------------------------------------------------------------------------------

# A run of sentence-final marks followed by whitespace or the end of the text.
MAX_NEW_TOKENS = 16  # the answer cap of every generation (an answer is a few words)
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
# Letters directly before a position (the word a '.' closes).
_WORD_BEFORE = re.compile(r"[A-Za-z]+$")
# What follows an abbreviation for it to be read as one: optional spaces, then a letter.
_LETTER_NEXT = re.compile(r"[ \t]*[^\W\d_]")
# Titles that are written with a '.' but hardly ever end a sentence before a name.
_TITLES = frozenset({"Mr", "Mrs", "Ms", "Dr", "Prof", "St", "Mt", "Ft", "Gen", "Col", "Sgt", "Lt", "Capt"})


def _is_abbreviation(text: str, start: int, end: int) -> bool:
    """Whether the single '.' at ``text[start:end]`` closes an initial or a title, not a sentence."""
    if text[start:end] != ".":
        return False
    word = _WORD_BEFORE.search(text[:start])
    if word is None:
        return False
    letters = word.group()
    is_initial = len(letters) == 1 and letters.isupper()  # "J.", the "S" of "U.S."
    if not (is_initial or letters in _TITLES):
        return False
    return _LETTER_NEXT.match(text, end) is not None


def natural_stop(text: str) -> str:
    """Cut a decoded continuation at its natural end and strip whitespace.

    Rules, in order:

    * Leading whitespace (line breaks included) is dropped first, so a continuation that opens
      with a line break still yields its first line of text.
    * The text is cut at the first newline (``\\n`` or ``\\r``).
    * Within that line it is cut after the first sentence end: a run of ``.``, ``!`` or ``?``
      followed by whitespace or by the end of the text. The marks are kept (``"Paris. It"`` ->
      ``"Paris."``); :func:`normalize_answer` drops them before scoring.
    * A ``.`` directly followed by a non-space (``"3.5"``, ``"e.g"``, the first dot of ``"U.S"``)
      is never a sentence end.
    * A single ``.`` after a single capital letter standing alone (an initial: ``"J."``,
      ``"R."``, the ``"S."`` of ``"U.S."``) or after a title (``Mr``, ``Mrs``, ``Ms``, ``Dr``,
      ``Prof``, ``St``, ``Mt``, ...) is not a sentence end when a letter follows, after optional
      spaces (``"U.S. Army"``, ``"J. R. R. Tolkien"``, ``"St. Louis"``). At the end of the text
      or before a digit it is.
    * Without any newline or sentence end the whole (stripped) text is kept.
    """
    text = text.lstrip()
    line = re.split(r"[\r\n]", text, maxsplit=1)[0]
    for match in _SENTENCE_END.finditer(line):
        if not _is_abbreviation(line, match.start(), match.end()):
            return line[: match.end()].strip()
    return line.strip()


def settled(text: str) -> bool:
    """Whether :func:`natural_stop` gives the same answer for ``text`` and for any continuation.

    True once the first line of text is closed by a newline, or once the sentence end that cuts it
    is followed (after whitespace) by a further character, so that the abbreviation rule has seen
    what follows. A trailing U+FFFD (half of a multi-byte character from a partial decode) is not
    read as a character.
    """
    t = text.lstrip().rstrip("\ufffd")
    if not t:
        return False
    if re.search(r"[\r\n]", t):
        return True
    cut = natural_stop(t)  # no newline: cut == t[: end of the accepted sentence end]
    return len(cut) < len(t) and t[len(cut) :].strip() != ""


class _SettledAnswers:
    """A ``generate`` stopping criterion: a sequence is done once its answer is :func:`settled`."""

    def __init__(self, tokenizer, prompt_length: int) -> None:
        self.tokenizer, self.start = tokenizer, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.start :].tolist()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return torch.tensor([settled(t) for t in texts], dtype=torch.bool, device=input_ids.device)


# --------------------------------------------------------------------------------------------
# Greedy generation
# --------------------------------------------------------------------------------------------


def _eos_ids(model, tokenizer) -> list[int]:
    """Every end-of-sequence id: the tokenizer's and the model's generation config's."""
    ids: list[int] = []
    config = getattr(model, "generation_config", None)
    for source in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        if source is None:
            continue
        for i in [source] if isinstance(source, int) else list(source):
            if int(i) not in ids:
                ids.append(int(i))
    return ids


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    prompts: list[str],
    device: torch.device | str,
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 32,
    early_stop: bool = True,
    progress: str = "",
) -> list[str]:
    """Greedy answers of ``model`` to ``prompts``, each cut by :func:`natural_stop`.

    Decoding is greedy (``do_sample=False``) over left-padded batches with an attention mask;
    a sequence stops at an end-of-sequence token (the tokenizer's or the model's generation
    config's) or after ``max_new_tokens`` new tokens. Only the new tokens are decoded, with
    ``skip_special_tokens=True``. Prompts of similar token length are batched together (fewer
    pad tokens); the answers come back in the order of ``prompts``. The tokenizer's
    ``padding_side`` (and its pad token, borrowed from EOS when it has none) is restored
    afterwards. ``early_stop``: a sequence stops as soon as its answer is :func:`settled` (the
    same answers, fewer decoding steps). ``progress``: a label; when given, a progress bar over
    the prompts under that label (long evaluations generate for many minutes).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompts = list(prompts)
    if not prompts:
        return []
    eos = _eos_ids(model, tokenizer)
    side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    answers: list[str | None] = [None] * len(prompts)
    try:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
            tokenizer.pad_token = tokenizer.eos_token
        lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
        bar = tqdm(total=len(prompts), desc=progress, unit="prompt", disable=not progress, leave=False)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True).to(device)
            extra = {"eos_token_id": eos} if eos else {}
            if early_stop:
                from transformers import StoppingCriteriaList

                stop = _SettledAnswers(tokenizer, enc["input_ids"].shape[1])
                extra["stopping_criteria"] = StoppingCriteriaList([stop])
            gen = model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                **extra,
            )
            new = gen[:, enc["input_ids"].shape[1] :].tolist()
            for i, ids in zip(chunk, new, strict=True):
                cut = next((k for k, t in enumerate(ids) if t in eos), len(ids))
                answers[i] = natural_stop(tokenizer.decode(ids[:cut], skip_special_tokens=True))
            bar.update(len(chunk))
        bar.close()
    finally:
        tokenizer.padding_side = side
        if tokenizer.pad_token != pad_token:
            tokenizer.pad_token = pad_token
    return [a if a is not None else "" for a in answers]


def reference_generations(
    model,
    tokenizer,
    prompts: list[str],
    device: torch.device | str,
    max_new_tokens: int = MAX_NEW_TOKENS,
    progress: bool = False,
) -> list[str]:
    """The pre-edit model's own answers to the locality prompts (:func:`generate_answers`).

    Call it before any edit; :func:`wild_scores` compares the edited model's answers with these
    (``locality_references``) for the specificity scores.
    """
    label = "wild: pre-edit answers" if progress else ""
    return generate_answers(model, tokenizer, prompts, device, max_new_tokens=max_new_tokens, progress=label)


# --------------------------------------------------------------------------------------------
# SQuAD-style answer comparison
# --------------------------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD normalization: lowercase, drop punctuation, drop the articles a/an/the, collapse spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, target: str) -> float:
    """1.0 when the normalized prediction equals the normalized target, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(target))


def token_f1(prediction: str, target: str) -> float:
    """SQuAD token F1 between the normalized words of ``prediction`` and ``target``.

    Words are counted with multiplicity. Both empty gives 1.0; exactly one empty gives 0.0.
    """
    pred, gold = normalize_answer(prediction).split(), normalize_answer(target).split()
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------

_DECODING = (
    "greedy decoding from the prompt alone (at most max_new_tokens new tokens, stopped at EOS), "
    "cut at the first newline or sentence end (edit_gym.wild.natural_stop)"
)

WILD_PROTOCOL: dict[str, str] = {
    "wild_efficacy_em": f"mean SQuAD exact match of the edited model's answers to the edit prompts "
    f"against the new targets; {_DECODING}",
    "wild_efficacy_f1": f"mean SQuAD token F1 of the edited model's answers to the edit prompts "
    f"against the new targets; {_DECODING}",
    "wild_generalization_em": f"mean SQuAD exact match of the edited model's answers to paraphrases "
    f"of the edit prompts against the new targets; {_DECODING}",
    "wild_generalization_f1": f"mean SQuAD token F1 of the edited model's answers to paraphrases "
    f"of the edit prompts against the new targets; {_DECODING}",
    "wild_specificity_em": f"mean SQuAD exact match of the edited model's answers to unrelated "
    f"(locality) prompts against the pre-edit model's own answers; {_DECODING}",
    "wild_specificity_f1": f"mean SQuAD token F1 of the edited model's answers to unrelated "
    f"(locality) prompts against the pre-edit model's own answers; {_DECODING}",
}


def _scores(predictions: Sequence[str], references: Sequence[str]) -> tuple[float, float]:
    em = sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True))
    f1 = sum(token_f1(p, r) for p, r in zip(predictions, references, strict=True))
    return em / len(references), f1 / len(references)


def wild_scores(
    model,
    tokenizer,
    device: torch.device | str,
    *,
    edit_prompts: list[str],
    targets: list[str],
    paraphrase_prompts: list[str],
    paraphrase_targets: list[str],
    locality_prompts: list[str],
    locality_references: list[str],
    max_new_tokens: int = MAX_NEW_TOKENS,
    locality_answers: list[str] | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Generation-based efficacy, generalization and specificity of an (edited) model.

    Each group generates answers with :func:`generate_answers` and averages
    :func:`exact_match` and :func:`token_f1` against its references (see :data:`WILD_PROTOCOL`):
    ``edit_prompts`` vs ``targets`` (``wild_efficacy_*``), ``paraphrase_prompts`` vs
    ``paraphrase_targets`` (``wild_generalization_*``) and ``locality_prompts`` vs
    ``locality_references``, the pre-edit model's answers from :func:`reference_generations`
    (``wild_specificity_*``). A group whose prompt list is empty is left out of the result.
    ``locality_answers``: the model's answers to ``locality_prompts`` when they are already known
    (on the unedited model they are the references themselves), so they are not generated again.
    ``progress``: a progress bar per group.
    """
    groups = [
        ("efficacy", edit_prompts, targets, "targets"),
        ("generalization", paraphrase_prompts, paraphrase_targets, "paraphrase_targets"),
        ("specificity", locality_prompts, locality_references, "locality_references"),
    ]
    for name, prompts, refs, refs_name in groups:
        if len(prompts) != len(refs):
            raise ValueError(f"{name}: {len(prompts)} prompts but {len(refs)} {refs_name}")
    out: dict[str, float] = {}
    if locality_answers is not None and len(locality_answers) != len(locality_prompts):
        raise ValueError(f"{len(locality_answers)} locality_answers for {len(locality_prompts)} prompts")
    for name, prompts, refs, _ in groups:
        if not prompts:
            continue
        if name == "specificity" and locality_answers is not None:
            answers = list(locality_answers)
        else:
            label = f"wild: {name}" if progress else ""
            answers = generate_answers(
                model, tokenizer, list(prompts), device, max_new_tokens=max_new_tokens, progress=label
            )
        em, f1 = _scores(answers, refs)
        out[f"wild_{name}_em"] = em
        out[f"wild_{name}_f1"] = f1
    return out
