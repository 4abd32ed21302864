"""Ordinary text the package can produce offline, and the key covariance C0 computed from it.

No corpus download is possible here, so "ordinary text" is the pre-edit model's own samples
(nucleus sampling from a few neutral openings, fixed seed): it is text the model finds typical,
which is what C0 must describe (ROME/MEMIT use Wikipedia for the same purpose). Two disjoint
sample sets are drawn: ``"covariance"`` (512 x 48 tokens) for C0, ``"heldout"`` (32 x 48) for the
perplexity probe. 512 x 48 because AlphaEdit's null space needs it: estimated from 6,144 tokens
(the earlier 128 x 48), the directions it takes for unused hold 7% of unseen ordinary-text keys'
energy against the 2% asked for; from 24,576 tokens 3% (``benchmarks/c0_samples.py``,
results/editors/c0_samples.md). Both, and C0, are cached on disk per backbone.

Memory: C0 is one d_in x d_in float32 matrix per candidate, e.g. 30 x 1536^2 x 4 B = 283 MB for
SmolLM2-135M's ``down_proj``s (the same again in RAM for MEMIT's inverse or AlphaEdit's projector).
"""

from __future__ import annotations

import hashlib
import json

import torch

from edit_gym.backbones import Backbone
from edit_gym.cache import cache_dir, cache_name, read_cache_file, write_cache_file
from edit_gym.candidates import Candidate
from edit_gym.editing.capture import module_inputs

OPENINGS = ("The", "In", "A", "It", "This", "When", "Many", "One")
SAMPLE_SETS = {"covariance": (512, 48, 1234), "heldout": (32, 48, 5678)}  # sequences, tokens, seed


def slug(backbone: Backbone) -> str:
    return cache_name(backbone.name)


def weights_digest(backbone: Backbone) -> str:
    """The backbone's fingerprint (every weight and the tokenizer, taken at load), cut for file names."""
    from edit_gym.backbones import weights_fingerprint

    return (backbone.fingerprint or weights_fingerprint(backbone.model, backbone.tokenizer))[:16]


@torch.no_grad()
def model_samples(backbone: Backbone, which: str = "covariance") -> list[list[int]]:
    """Token-id sequences sampled from the pre-edit model (cached; call on pristine weights)."""
    if which not in SAMPLE_SETS:
        raise ValueError(f"unknown sample set {which!r} (known: {', '.join(SAMPLE_SETS)})")
    count, length, seed = SAMPLE_SETS[which]
    tag = f"{which}-{count}x{length}-s{seed}"
    path = cache_dir() / "samples" / f"{slug(backbone)}-{weights_digest(backbone)}-{tag}.json"
    data = read_cache_file(path)
    if data is not None:
        return json.loads(data)["ids"]
    tok, model = backbone.tokenizer, backbone.model
    per_opening = -(-count // len(OPENINGS))
    out: list[list[int]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for opening in OPENINGS:
            ids = torch.tensor([tok(opening)["input_ids"]], device=backbone.device)
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_p=0.95,
                temperature=1.0,
                max_new_tokens=length,
                min_new_tokens=length,
                num_return_sequences=per_opening,
                pad_token_id=tok.pad_token_id,
            )
            out.extend(gen.tolist())
    out = out[:count]
    write_cache_file(path, json.dumps({"backbone": backbone.name, "ids": out}).encode())
    return out


@torch.no_grad()
def key_covariance(
    backbone: Backbone, candidates: list[Candidate], batch_size: int = 16
) -> list[torch.Tensor]:
    """Per candidate, C0 = mean of k k^T over every token of the covariance samples (cached)."""
    from safetensors.torch import load, save

    names = json.dumps([[c.name for c in candidates], list(SAMPLE_SETS["covariance"])])
    digest = hashlib.sha256((names + weights_digest(backbone)).encode()).hexdigest()[:12]
    path = cache_dir() / "covariance" / f"{slug(backbone)}-{digest}.safetensors"
    data = read_cache_file(path)  # None if absent or damaged (checksummed): recomputed below
    if data is not None:
        stored = load(data)
        return [stored[f"c{j}"].to(c.param.device) for j, c in enumerate(candidates)]
    samples = torch.tensor(model_samples(backbone, "covariance"), device=backbone.device)
    sums = [torch.zeros(c.shape[1], c.shape[1], device=c.param.device) for c in candidates]
    count = 0
    with module_inputs([c.module for c in candidates], lambda j, x: sums[j].addmm_(x.T, x)):
        for i in range(0, len(samples), batch_size):
            chunk = samples[i : i + batch_size]
            backbone.model(input_ids=chunk)
            count += chunk.numel()
    cov = [s / count for s in sums]
    write_cache_file(path, save({f"c{j}": c.contiguous().cpu() for j, c in enumerate(cov)}))
    return cov
