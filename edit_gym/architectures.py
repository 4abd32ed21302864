"""Architecture knowledge as data: where each family keeps its blocks and its editable matrices.

An entry maps a Hugging Face ``config.model_type`` to the attribute path of the block list, the
config field holding the number of blocks, and the candidate module templates inside a block
(relative to the block). The default candidate of every family is the MLP output projection, the
matrix nearly every editor (ROME, MEMIT, RLEdit, AlphaEdit) writes to. Nothing here looks at model
*names*: an unknown ``model_type`` is an error that asks for an explicit module list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where the editable matrices of one model family live."""

    blocks: str  # attribute path of the block list, e.g. "model.layers"
    num_blocks_field: str  # config field with the number of blocks
    mlp_out: str  # MLP output projection inside a block (the default candidate)
    mlp_in: tuple[str, ...]  # MLP input projections inside a block (optional candidates)


_LLAMA_LIKE = ArchitectureSpec(
    blocks="model.layers",
    num_blocks_field="num_hidden_layers",
    mlp_out="mlp.down_proj",
    mlp_in=("mlp.gate_proj", "mlp.up_proj"),
)

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "phi3": ArchitectureSpec("model.layers", "num_hidden_layers", "mlp.down_proj", ("mlp.gate_up_proj",)),
    "gpt2": ArchitectureSpec("transformer.h", "n_layer", "mlp.c_proj", ("mlp.c_fc",)),
    "gptj": ArchitectureSpec("transformer.h", "n_layer", "mlp.fc_out", ("mlp.fc_in",)),
    "gpt_neox": ArchitectureSpec(
        "gpt_neox.layers", "num_hidden_layers", "mlp.dense_4h_to_h", ("mlp.dense_h_to_4h",)
    ),
}


def architecture_for(model_type: str) -> ArchitectureSpec:
    """The spec for ``model_type``; a clear error listing the known families otherwise."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(
            f"no candidate-module map for model_type {model_type!r} (known: {known}); "
            "pass candidates=[...] with full module names instead"
        ) from None


def default_candidates(model_type: str, num_blocks: int, which: str = "mlp_out") -> list[str]:
    """Full module names of the default candidates: one matrix per block.

    ``which`` is ``"mlp_out"`` (default) or ``"mlp_in"`` (every input projection of every block).
    """
    spec = architecture_for(model_type)
    if which == "mlp_out":
        inner: tuple[str, ...] = (spec.mlp_out,)
    elif which == "mlp_in":
        inner = spec.mlp_in
    else:
        raise ValueError(f"unknown candidate group {which!r}; expected 'mlp_out' or 'mlp_in'")
    return [f"{spec.blocks}.{i}.{name}" for i in range(num_blocks) for name in inner]


def block_of(model_type: str, module_name: str) -> int | None:
    """The index of the transformer block that holds ``module_name``, or None if it is not in one.

    Read from the family's block path (``model.layers.7.mlp.down_proj`` -> 7); an unknown family
    gives None (editors that need block order then ask for a known architecture).
    """
    spec = ARCHITECTURES.get(model_type)
    if spec is None:
        return None
    prefix = spec.blocks + "."
    if not module_name.startswith(prefix):
        return None
    head = module_name[len(prefix) :].split(".", 1)[0]
    return int(head) if head.isdigit() else None
