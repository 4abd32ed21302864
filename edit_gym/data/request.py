"""The one edit-request type every data source produces, and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field


class InvalidRecordError(ValueError):
    """A data record that cannot become an :class:`EditRequest`; the message names record and field."""


@dataclass(frozen=True)
class Probe:
    """A prompt and the answer it is scored on (teacher-forced)."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class EditRequest:
    """Ask the model to answer ``prompt`` with ``target_new`` instead of ``target_true``.

    ``prompt`` contains ``subject`` verbatim and ends right before the answer. ``paraphrases``
    rephrase the prompt (same subject and relation: scored for generalization). Two kinds of
    locality probes are kept apart:

    * ``neighbourhood``: what "specificity" is scored on (top-1 agreement with the pre-edit
      model). Its kind depends on the data: for KnowEdit CounterFact it is *relation
      specificity* (the same subject asked under other relations, ``locality.Relation_Specificity``);
      for ROME ``multi_counterfact`` and the built-in facts it is other subjects under the same
      relation; for zsRE an unrelated question.
    * ``neighbours``: other subjects under the same relation, each answered by its own true object
      (ROME's construction): what CounterFact's probability ``neighbourhood_score`` is scored on.

    ``relation`` names the relation (a relation id, or for KnowEdit the prompt with the subject
    replaced by ``{}``). Targets are stored without a leading space.
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()
    neighbourhood: tuple[Probe, ...] = ()
    neighbours: tuple[Probe, ...] = ()
    relation: str | None = None
    uid: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        where = f"record {self.uid!r}" if self.uid else "record"
        for name in ("prompt", "subject", "target_new"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidRecordError(f"{where}: field {name!r} is missing or empty")
        if self.target_true is not None and (
            not isinstance(self.target_true, str) or not self.target_true.strip()
        ):
            raise InvalidRecordError(f"{where}: field 'target_true' is empty")
        if self.subject not in self.prompt:
            raise InvalidRecordError(
                f"{where}: field 'subject' ({self.subject!r}) does not occur in field 'prompt' ({self.prompt!r})"
            )
        for i, p in enumerate(self.paraphrases):
            if not isinstance(p, str) or not p.strip():
                raise InvalidRecordError(f"{where}: field 'paraphrases[{i}]' is empty")
        for name in ("neighbourhood", "neighbours"):
            for i, probe in enumerate(getattr(self, name)):
                if not probe.prompt.strip() or not probe.answer.strip():
                    raise InvalidRecordError(f"{where}: field '{name}[{i}]' has an empty prompt or answer")
        # Targets never carry the leading space the tokenizer adapter adds.
        object.__setattr__(self, "target_new", self.target_new.strip())
        if self.target_true is not None:
            object.__setattr__(self, "target_true", self.target_true.strip())
