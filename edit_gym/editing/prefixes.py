"""MEMIT's context templates: short prefixes sampled from the model itself, once, and cached.

An optimized target (:mod:`edit_gym.editing.targets`) must make the new answer follow the edit
prompt in running text, not only at the start of a document, and the keys
(:mod:`edit_gym.editing.keys`) are averaged over the same contexts. MEMIT (``compute_z`` /
``get_context_templates``) samples ``count`` prefixes of ``length`` tokens from the model, starting
from a few openings, with top-k sampling, and uses ``["{}"] + [prefix + ". {}"]``. The same is done
here, seeded, and cached on disk per backbone (the prefixes depend on the pristine weights only).
"""

from __future__ import annotations

import json

import torch

from edit_gym.backbones import Backbone
from edit_gym.cache import cache_dir, read_cache_file, write_cache_file

OPENINGS = ("The", "Therefore", "Because", "I", "You")  # MEMIT's
PREFIX_TOP_K = 5  # MEMIT's generate_fast samples with top-k 5
PREFIX_SEED = 0


def _digest(backbone: Backbone) -> str:
    from edit_gym.editing.covariance import weights_digest

    return weights_digest(backbone)


@torch.no_grad()
def context_templates(backbone: Backbone, count: int = 5, length: int = 10) -> list[str]:
    """``["{}"]`` plus ``count`` model-sampled prefixes of ``length`` tokens, each as ``"<prefix>. {}"``.

    ``{}`` stands for the edit prompt. Call on pristine weights (the env does, at set-up).
    ``count=0`` gives the plain prompt only.
    """
    if count < 0 or length < 1:
        raise ValueError(f"count must be >= 0 and length >= 1, got {count}, {length}")
    if count == 0:
        return ["{}"]
    from edit_gym.editing.covariance import slug

    path = cache_dir() / "prefixes" / f"{slug(backbone)}-{_digest(backbone)}-{count}x{length}.json"
    data = read_cache_file(path)
    if data is not None:
        return json.loads(data)["templates"]
    tok, model = backbone.tokenizer, backbone.model
    per_opening = [count // len(OPENINGS) + (i < count % len(OPENINGS)) for i in range(len(OPENINGS))]
    prefixes: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PREFIX_SEED)
        for opening, n in zip(OPENINGS, per_opening, strict=True):
            if n == 0:
                continue
            ids = torch.tensor([tok(opening)["input_ids"]], device=backbone.device)
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=PREFIX_TOP_K,
                max_new_tokens=length,
                min_new_tokens=length,
                num_return_sequences=n,
                pad_token_id=tok.pad_token_id,
            )
            for seq in gen.tolist():
                text = tok.decode(seq, skip_special_tokens=True)
                prefixes.append(" ".join(text.replace("{", " ").replace("}", " ").split()))
    templates = ["{}"] + [p + ". {}" for p in prefixes]
    write_cache_file(path, json.dumps({"backbone": backbone.name, "templates": templates}).encode())
    return templates
