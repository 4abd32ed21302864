"""Edit data from files and the ``datasets`` library, in the formats the editing field uses.

Formats (detected per record):

* KnowEdit-style CounterFact: ``subject``, ``prompt``, ``target_new``, ``ground_truth``,
  ``rephrase`` (optional), ``locality: {Relation_Specificity: [{prompt, ground_truth}]}``. The
  locality prompts ask about the same subject under other relations (relation specificity) and
  become ``neighbourhood``. The records carry no relation id: ``relation`` is the prompt with the
  subject replaced by ``{}``, and ``neighbours`` (other subjects, same relation: CounterFact's
  neighbourhood) are built from the other records of the same source with that template, see
  :func:`with_knowedit_neighbours`.
* ROME ``multi_counterfact``: ``requested_rewrite{prompt with "{}", subject, target_new{str},
  target_true{str}}``, ``paraphrase_prompts``, ``neighborhood_prompts`` (answered by ``target_true``;
  they are other subjects under the same relation, so they are both ``neighbourhood`` and
  ``neighbours``).
* MEND-style zsRE: ``src``, ``subject``, ``alt`` (new answer), ``answers``, ``rephrase``, ``loc``,
  ``loc_ans``.

A malformed record raises :class:`InvalidRecordError` naming the source, the record and the field.
Files are parsed as JSON (never unpickled).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edit_gym.data.builtin import BUILTIN_DATASETS, builtin_requests
from edit_gym.data.request import EditRequest, InvalidRecordError, Probe

# KnowEdit records: at most this many other subjects of the same relation become ``neighbours``
KNOWEDIT_NEIGHBOURS = 10


def _first_answer(value: Any) -> str | None:
    """KnowEdit answers are a string, a list of aliases, or a list of alias groups: take the first."""
    while isinstance(value, list | tuple):
        if not value:
            return None
        value = value[0]
    return value if isinstance(value, str) and value.strip() else None


def _field(record: Mapping, name: str, where: str) -> Any:
    if name not in record or record[name] is None:
        raise InvalidRecordError(f"{where}: missing field {name!r}")
    return record[name]


def _text(record: Mapping, name: str, where: str) -> str:
    value = _field(record, name, where)
    if isinstance(value, Mapping):  # ROME wraps targets as {"str": ..., "id": ...}
        value = value.get("str")
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecordError(f"{where}: field {name!r} is empty or not text")
    return value


def _strings(record: Mapping, name: str, where: str) -> tuple[str, ...]:
    """An optional text-or-list-of-texts field; blank entries are dropped, other types refused."""
    value = record.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if not isinstance(value, list | tuple):
        raise InvalidRecordError(f"{where}: field {name!r} must be text or a list of texts")
    return tuple(v for v in value if isinstance(v, str) and v.strip())


def _knowedit_probes(record: Mapping, where: str) -> tuple[Probe, ...]:
    """``locality.Relation_Specificity``: a list of ``{prompt, ground_truth}`` objects."""
    locality = record.get("locality")
    if locality is None:
        return ()
    if not isinstance(locality, Mapping):
        raise InvalidRecordError(f"{where}: field 'locality' must be an object")
    items = locality.get("Relation_Specificity")
    if items is None:
        return ()
    if not isinstance(items, list | tuple):
        raise InvalidRecordError(f"{where}: field 'locality.Relation_Specificity' must be a list")
    probes = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidRecordError(f"{where}: field 'locality.Relation_Specificity[{i}]' must be an object")
        prompt, answer = item.get("prompt"), _first_answer(item.get("ground_truth"))
        if isinstance(prompt, str) and prompt.strip() and answer:
            probes.append(Probe(prompt, answer))
    return tuple(probes)


def _checked(where: str, **fields: Any) -> EditRequest:
    try:
        return EditRequest(**fields)
    except InvalidRecordError as err:
        raise InvalidRecordError(f"{where}: {str(err).split(': ', 1)[-1]}") from None


def relation_template(prompt: str, subject: str) -> str:
    """A KnowEdit record's relation: its prompt with the (first) subject replaced by ``{}``."""
    return prompt.replace(subject, "{}", 1)


def from_knowedit(record: Mapping, where: str) -> EditRequest:
    """One KnowEdit record; its ``neighbours`` need the other records (:func:`with_knowedit_neighbours`)."""
    probes = _knowedit_probes(record, where)
    prompt, subject = _text(record, "prompt", where), _text(record, "subject", where)
    return _checked(
        where,
        prompt=prompt,
        subject=subject,
        target_new=_text(record, "target_new", where),
        target_true=_first_answer(record.get("ground_truth")),
        paraphrases=_strings(record, "rephrase", where),
        neighbourhood=probes,
        relation=relation_template(prompt, subject),
        uid=str(record.get("case_id", where)),
    )


def _pair_rank(a: str, b: str) -> bytes:
    """A stable pseudo-random rank of ``b`` for ``a`` (independent of Python's hash seed)."""
    return hashlib.blake2b(f"{a}\x00{b}".encode(), digest_size=8).digest()


def with_knowedit_neighbours(
    requests: list[EditRequest], knowedit: list[bool], limit: int = KNOWEDIT_NEIGHBOURS
) -> list[EditRequest]:
    """Give each KnowEdit request ``neighbours`` built from the other KnowEdit requests of its source.

    A neighbour is another record with the same relation template, asked as that record's prompt
    and answered by that record's ground truth (so a record without a ground truth is never a
    neighbour). Like ROME's construction, records with the same true object come first, then the
    other records of the relation; each group in a fixed pseudo-random order (a hash of the two
    prompts), at most ``limit`` in all. Never the record's own subject (nor a prompt containing
    it), and never a record whose true object is the request's ``target_new`` (that probe could
    not be scored). ``knowedit[i]`` says whether ``requests[i]`` came from a KnowEdit record.
    """
    groups: dict[str, list[int]] = {}
    for i, (req, is_knowedit) in enumerate(zip(requests, knowedit, strict=True)):
        if is_knowedit and req.relation is not None:
            groups.setdefault(req.relation, []).append(i)
    out = list(requests)
    for members in groups.values():
        for i in members:
            req = requests[i]
            candidates = [
                other
                for other in (requests[j] for j in members if j != i)
                if other.target_true
                and other.subject != req.subject
                and req.subject not in other.prompt
                and other.target_true != req.target_new
            ]
            candidates.sort(
                key=lambda o: (o.target_true != req.target_true, _pair_rank(req.prompt, o.prompt))
            )
            probes: dict[str, Probe] = {}
            for other in candidates:
                if len(probes) >= limit:
                    break
                probes.setdefault(other.prompt, Probe(other.prompt, other.target_true))
            if probes:
                out[i] = dataclasses.replace(req, neighbours=tuple(probes.values()))
    return out


def from_rome(record: Mapping, where: str) -> EditRequest:
    rewrite = _field(record, "requested_rewrite", where)
    if not isinstance(rewrite, Mapping):
        raise InvalidRecordError(f"{where}: field 'requested_rewrite' is not an object")
    subject = _text(rewrite, "subject", where + ".requested_rewrite")
    template = _text(rewrite, "prompt", where + ".requested_rewrite")
    if "{}" not in template:
        raise InvalidRecordError(f"{where}: field 'requested_rewrite.prompt' has no '{{}}' for the subject")
    target_true = _text(rewrite, "target_true", where + ".requested_rewrite")
    # other subjects under the same relation, answered by the true object: both kinds of probe
    neighbours = tuple(Probe(p, target_true) for p in _strings(record, "neighborhood_prompts", where))
    return _checked(
        where,
        prompt=template.replace("{}", subject, 1),
        subject=subject,
        target_new=_text(rewrite, "target_new", where + ".requested_rewrite"),
        target_true=target_true,
        paraphrases=_strings(record, "paraphrase_prompts", where),
        neighbourhood=neighbours,
        neighbours=neighbours,
        relation=rewrite.get("relation_id"),
        uid=str(record.get("case_id", where)),
    )


def from_zsre(record: Mapping, where: str) -> EditRequest:
    loc, loc_ans = record.get("loc"), _first_answer(record.get("loc_ans"))
    probes = (Probe(loc, loc_ans),) if isinstance(loc, str) and loc.strip() and loc_ans else ()
    return _checked(
        where,
        prompt=_text(record, "src", where),
        subject=_text(record, "subject", where),
        target_new=_first_answer(_field(record, "alt", where)) or "",
        target_true=_first_answer(record.get("answers")),
        paraphrases=_strings(record, "rephrase", where),
        neighbourhood=probes,
        uid=str(record.get("case_id", where)),
    )


def detect_format(record: Mapping) -> str:
    """'rome', 'zsre' or 'knowedit', from the keys a record carries."""
    if "requested_rewrite" in record:
        return "rome"
    if "src" in record or "alt" in record:
        return "zsre"
    return "knowedit"


_CONVERTERS = {"knowedit": from_knowedit, "rome": from_rome, "zsre": from_zsre}


def requests_from_records(records: Iterable[Mapping], source: str = "data") -> list[EditRequest]:
    """Convert raw records (any supported format, detected per record) to requests.

    KnowEdit records then get their ``neighbours`` from the other KnowEdit records of ``records``.
    """
    out, knowedit = [], []
    for i, record in enumerate(records):
        where = f"{source} record {i}"
        if not isinstance(record, Mapping):
            raise InvalidRecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
        kind = detect_format(record)
        out.append(_CONVERTERS[kind](record, where))
        knowedit.append(kind == "knowedit")
    if not out:
        raise InvalidRecordError(f"{source}: no records")
    return with_knowedit_neighbours(out, knowedit)


def _read_json_records(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, Mapping):  # {"data": [...]} wrappers
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InvalidRecordError(f"{path}: expected a JSON list of records")
        data = lists[0]
    if not isinstance(data, list):
        raise InvalidRecordError(f"{path}: expected a JSON list of records")
    return data


def load_requests(source: str, split: str | None = None) -> list[EditRequest]:
    """Requests from a built-in name, a local JSON/JSONL file, or a ``datasets`` source.

    ``datasets`` sources are a hub id or a local data folder, optionally with ``:split``
    (default ``train``), e.g. ``"my-org/counterfact:test"``.
    """
    if source in BUILTIN_DATASETS:
        return builtin_requests(source)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix in (".json", ".jsonl"):
        return requests_from_records(_read_json_records(path), source=path.name)
    return _load_with_datasets(source, split)


def _load_with_datasets(source: str, split: str | None) -> list[EditRequest]:
    name, _, split_in_name = source.partition(":") if not Path(source).exists() else (source, "", "")
    split = split or split_in_name or "train"
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a dependency
        raise ValueError(f"unknown dataset {source!r}: the 'datasets' library is not installed") from err
    try:
        if Path(name).is_file():
            suffix = Path(name).suffix.lstrip(".")
            ds = datasets.load_dataset({"jsonl": "json"}.get(suffix, suffix), data_files=name, split=split)
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as err:  # noqa: BLE001 - re-raised with the source named
        raise ValueError(
            f"unknown dataset {source!r}: not a built-in name ({', '.join(BUILTIN_DATASETS)}), not a local "
            f"JSON file, and the datasets library could not load it ({type(err).__name__}: {err})"
        ) from None
    return requests_from_records(ds, source=source)
