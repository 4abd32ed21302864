"""Which requests a model already knows: the facts worth editing away.

A request is *known* when the pre-edit model predicts every token of ``target_true`` top-1 under
teacher forcing. The list of known request ids is cached per (backbone, dataset) on disk, so the
filter costs one batched pass the first time only.
"""

from __future__ import annotations

import hashlib
import json

from edit_gym.backbones import Backbone
from edit_gym.cache import cache_dir, cache_name, read_cache_file, write_cache_file
from edit_gym.data.request import EditRequest
from edit_gym.editing.scores import accuracy
from edit_gym.tokens import PairEncoder


def known_requests(backbone: Backbone, requests: list[EditRequest], dataset: str) -> list[EditRequest]:
    """The requests whose true answer the model already gives (those without one are dropped)."""
    asked = [r for r in requests if r.target_true]
    digest = hashlib.sha256(
        json.dumps([r.uid + r.prompt + str(r.target_true) for r in asked]).encode()
    ).hexdigest()
    slug = cache_name(f"{backbone.name}-{dataset}", limit=80)
    path = cache_dir() / "known" / f"{slug}-{digest[:12]}.json"
    data = read_cache_file(path)  # None if absent or damaged (checksummed): recomputed below
    if data is not None:
        keep = set(json.loads(data)["known"])
        return [r for r in asked if r.uid in keep]
    scores = accuracy(
        backbone.model,
        PairEncoder(backbone.tokenizer),
        [(r.prompt, r.target_true) for r in asked],
        device=backbone.device,
    )
    kept = [r for r, s in zip(asked, scores, strict=True) if s == 1.0]
    write_cache_file(
        path,
        json.dumps({"backbone": backbone.name, "dataset": dataset, "known": [r.uid for r in kept]}).encode(),
    )
    return kept
