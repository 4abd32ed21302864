"""What the pre-edit model says about the locality probes, kept on disk across runs.

Every stream needs two things from the pristine weights for each locality probe of its requests:
the teacher-forced top-k distribution at the answer positions (:func:`edit_gym.editing.scores.references`:
specificity and KL) and the greedy answer to the prompt (:func:`edit_gym.wild.reference_generations`:
the generation-based protocol's locality reference). Both are functions of the weights and the probe
alone, yet on SmolLM2 a run over CounterFact's 839 records (5,486 probes) spent about 7 minutes on
the first and 15 on the second, every run, before this store.

:class:`PristineStore` keeps them per backbone under ``cache_dir()/pristine/``: one file per
(backbone, weights fingerprint, kind), holding items keyed by a hash of the probe. A run computes
only the probes the file lacks and merges them in: under a file lock it re-reads the file, adds its
items and writes it (atomic and checksummed), so runs that share the store never lose each other's
items and never see a half-written file; a damaged file is rebuilt. Loading uses safetensors and
JSON: no code runs. The fingerprint is the backbone's (:func:`edit_gym.backbones.weights_fingerprint`:
every weight byte and the tokenizer, taken at load) with the device type, so other weights, another
tokenizer or another device never read these answers; :data:`STORE_VERSION` is bumped whenever the
code that computes them changes (decoding, stopping, batching, tokenization of the probes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from filelock import FileLock

from edit_gym.cache import cache_dir, cache_name, read_cache_file, write_cache_file
from edit_gym.editing.scores import REFERENCE_TOP_K, Reference

STORE_VERSION = 1  # bump when the answers' code changes: earlier files are then never read


def item_key(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


class PristineStore:
    """The pristine model's references and greedy answers per probe, on disk (see the module doc).

    ``name`` and ``fingerprint`` identify the weights and where they run (the env passes the
    backbone's load-time fingerprint and its device type); ``folder`` defaults to
    ``cache_dir()/pristine``.
    """

    def __init__(self, name: str, fingerprint: str, folder: Path | None = None) -> None:
        self.name = name
        self.fingerprint = fingerprint
        self._folder = folder
        self._items: dict[str, dict] = {}  # file name -> {key: item}, as last read or written

    def path(self, kind: str) -> Path:
        folder = self._folder if self._folder is not None else cache_dir() / "pristine"
        return folder / f"{cache_name(self.name)}-{self.fingerprint}-v{STORE_VERSION}-{kind}"

    # ------------------------------------------------------------------ the two kinds
    def references(
        self,
        pairs: Sequence[tuple[str, str]],
        compute: Callable[[list[tuple[str, str]]], list[Reference]],
        k: int = REFERENCE_TOP_K,
    ) -> list[Reference]:
        """Per (prompt, answer) pair, its top-``k`` reference; ``compute`` gets the pairs not stored."""
        keys = [item_key(p, a) for p, a in pairs]
        return self._get(
            f"references-k{k}.safetensors", keys, list(pairs), compute, _save_references, _load_references
        )

    def generations(
        self, prompts: Sequence[str], compute: Callable[[list[str]], list[str]], max_new_tokens: int
    ) -> list[str]:
        """Per prompt, the pristine model's greedy answer; ``compute`` gets the prompts not stored."""
        keys = [item_key(p) for p in prompts]
        return self._get(
            f"generations-n{max_new_tokens}.json", keys, list(prompts), compute, _save_texts, _load_texts
        )

    # ------------------------------------------------------------------ storage
    def _read(self, kind: str, load: Callable[[bytes], dict]) -> dict:
        from safetensors import SafetensorError

        data = read_cache_file(self.path(kind))  # None if absent or damaged (then rebuilt)
        if data is None:
            return {}
        try:
            return load(data)
        except (ValueError, KeyError, TypeError, SafetensorError):  # unreadable: rebuilt like a damaged one
            return {}

    def _lock(self, kind: str) -> FileLock:
        path = self.path(kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path.parent / f".{path.name}.lock"))

    def _get(self, kind, keys, items, compute, save, load) -> list:
        have = self._items.get(kind)
        if have is None or any(key not in have for key in keys):
            with self._lock(kind):  # a writer's data and manifest land together
                have = {**self._read(kind, load), **(have or {})}
        missing = {key: item for key, item in zip(keys, items, strict=True) if key not in have}
        if missing:
            values = compute(list(missing.values()))  # outside the lock: it may take minutes
            if len(values) != len(missing):
                raise RuntimeError(f"compute returned {len(values)} values for {len(missing)} items")
            with self._lock(kind):  # what other runs added meanwhile is kept
                have = {**self._read(kind, load), **have, **dict(zip(missing, values, strict=True))}
                write_cache_file(self.path(kind), save(have))
        self._items[kind] = have
        return [have[key] for key in keys]


def _save_references(items: dict[str, Reference]) -> bytes:
    from safetensors.torch import save

    keys = sorted(items)
    if not keys:
        return save({"counts": torch.zeros(0, dtype=torch.long)}, metadata={"keys": "[]"})
    refs = [items[key] for key in keys]
    tensors = {
        "ids": torch.cat([r.ids.reshape(-1, r.ids.shape[-1]) for r in refs]).to(torch.long).contiguous(),
        "logp": torch.cat([r.logp.reshape(-1, r.logp.shape[-1]) for r in refs]).float().contiguous(),
        "counts": torch.tensor([r.ids.shape[0] for r in refs], dtype=torch.long),
    }
    return save(tensors, metadata={"keys": json.dumps(keys)})


def _load_references(data: bytes) -> dict[str, Reference]:
    from safetensors.torch import load

    tensors = load(data)
    keys = json.loads(_metadata(data)["keys"])
    counts = tensors["counts"].tolist()
    if len(counts) != len(keys) or (keys and sum(counts) != tensors["ids"].shape[0]):
        raise ValueError("reference store: counts do not match the stored rows")
    out, at = {}, 0
    for key, n in zip(keys, counts, strict=True):
        out[key] = Reference(tensors["ids"][at : at + n].clone(), tensors["logp"][at : at + n].clone())
        at += n
    return out


def _metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file's header (8-byte length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    return header.get("__metadata__", {})


def _save_texts(items: dict[str, str]) -> bytes:
    return json.dumps({"items": items}, sort_keys=True).encode()


def _load_texts(data: bytes) -> dict[str, str]:
    items = json.loads(data)["items"]
    if not isinstance(items, dict) or not all(isinstance(v, str) for v in items.values()):
        raise ValueError("generation store: items must map keys to strings")
    return items
