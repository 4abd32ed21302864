"""The built-in fact set: real, public facts written for this package, turned into edit requests.

``facts.tsv`` holds (subject, relation, object) rows and ``relations.json`` one prompt and three
paraphrase templates per relation. :func:`builtin_requests` makes one CounterFact-style request
per fact: ``target_new`` is another object of the same relation, the paraphrases rephrase the
prompt, and the neighbourhood (and ``neighbours``, the same probes) holds the same relation asked
of other subjects with their true objects. Everything is derived with a fixed seed, so the set is identical on every machine.
"""

from __future__ import annotations

import csv
import hashlib
import json
from functools import lru_cache
from importlib import resources

import numpy as np

from edit_gym.data.request import EditRequest, Probe

BUILTIN_DATASETS = ("facts", "facts-train", "facts-test", "questions", "questions-train", "questions-test")
# the question form (zsRE-style) of a fact: its relation's question inside this frame
QUESTION_FRAME = "Question: {}\nAnswer:"
TEST_FRACTION = 0.3  # of subjects, for the facts-train / facts-test split
# the by-subject split of the built-in facts: training split -> its held-out split
HELD_OUT_SPLIT = {"facts-train": "facts-test", "questions-train": "questions-test"}
NEIGHBOURS_PER_REQUEST = 3
_SEED = 20260


@lru_cache(maxsize=1)
def load_fact_table() -> tuple[dict[str, dict], tuple[tuple[str, str, str], ...]]:
    """The relation templates and the (subject, relation, object) rows, read from package data."""
    root = resources.files("edit_gym.data")
    relations = json.loads((root / "relations.json").read_text(encoding="utf-8"))
    with (root / "facts.tsv").open("r", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        rows = tuple((r["subject"], r["relation"], r["object"]) for r in reader)
    return relations, rows


def fill(template: str, subject: str) -> tuple[str, str]:
    """Put ``subject`` into ``template``; capitalise it when it opens the sentence.

    Returns the prompt and the subject as it appears in the prompt.
    """
    opening = template.split("{}", 1)[0]
    if (opening == "" or opening.endswith((": ", "\n"))) and subject[:1].islower():
        subject = subject[:1].upper() + subject[1:]
    return template.replace("{}", subject, 1), subject


def split_of(subject: str) -> str:
    """``"test"`` or ``"train"``: a fixed split by subject (a hash), so no subject is in both."""
    digest = hashlib.sha256(subject.encode("utf-8")).digest()
    return "test" if digest[0] < TEST_FRACTION * 256 else "train"


def builtin_requests(name: str = "facts") -> list[EditRequest]:
    """All requests of a built-in dataset, in a fixed order.

    ``facts`` is every fact in cloze form ("The capital of France is"); ``facts-train`` and
    ``facts-test`` split it by subject (about 70 / 30), for training learned editors on one part
    and evaluating them on the other. ``questions`` (``-train`` / ``-test``) are the same facts,
    targets and splits asked as questions, zsRE-style ("Question: What is the capital of
    France?\nAnswer:"), with question paraphrases and neighbours.
    """
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in dataset {name!r} (known: {', '.join(BUILTIN_DATASETS)})")
    relations, rows = load_fact_table()
    by_relation: dict[str, list[tuple[str, str]]] = {}
    for subject, relation, obj in rows:
        by_relation.setdefault(relation, []).append((subject, obj))
    rng = np.random.default_rng(_SEED)
    questions = name.startswith("questions")
    requests = []
    for subject, relation, obj in rows:
        templates = relations[relation]
        if questions:
            templates = {
                "prompt": QUESTION_FRAME.format(templates["question"]),
                "paraphrases": [QUESTION_FRAME.format(t) for t in templates["question_paraphrases"]],
            }
        facts = by_relation[relation]
        objects = sorted({o for _, o in facts if o != obj})
        target_new = objects[int(rng.integers(len(objects)))]
        others = [f for f in facts if f[0] != subject]
        picks = rng.choice(len(others), size=min(NEIGHBOURS_PER_REQUEST, len(others)), replace=False)
        prompt, subject_in_prompt = fill(templates["prompt"], subject)
        # other subjects under the same relation, answered by their true objects: both the
        # specificity probes and CounterFact's neighbourhood-score probes
        neighbours = tuple(
            Probe(fill(templates["prompt"], others[int(i)][0])[0], others[int(i)][1]) for i in picks
        )
        requests.append(
            EditRequest(
                prompt=prompt,
                subject=subject_in_prompt,
                target_new=target_new,
                target_true=obj,
                paraphrases=tuple(fill(t, subject)[0] for t in templates["paraphrases"]),
                neighbourhood=neighbours,
                neighbours=neighbours,
                relation=relation,
                uid=f"{relation}:{subject}",
            )
        )
    if "-" in name:
        requests = [r for r in requests if split_of(r.uid.split(":", 1)[1]) == name.split("-", 1)[1]]
    return requests


def training_texts() -> list[tuple[str, str]]:
    """(prompt, answer) pairs that state every fact in every template: the tiny model's corpus."""
    relations, rows = load_fact_table()
    pairs = []
    for subject, relation, obj in rows:
        templates = relations[relation]
        for template in (templates["prompt"], *templates["paraphrases"]):
            pairs.append((fill(template, subject)[0], obj))
    return pairs


def resolve_known_only(known_only: bool | None, dataset: str) -> bool:
    """``known_only=None`` means: only the facts the model already knows for the built-in sets,
    every record for other data."""
    return known_only if known_only is not None else dataset in BUILTIN_DATASETS
