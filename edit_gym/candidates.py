"""Candidate matrices: the modules an edit may write to, seen in one orientation.

Editors reason about ``W`` as ``d_out x d_in`` (``nn.Linear`` layout: ``y = W x``). GPT-2 style
``Conv1D`` stores the transpose (``y = x W``); :class:`Candidate` hides that, so every rule reads and
writes ``d_out x d_in`` matrices whatever the storage. Each candidate also knows its own device and
dtype, so models spread over several devices edit correctly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Candidate:
    """One editable matrix."""

    name: str
    module: nn.Module
    transposed: bool  # True when the stored weight is d_in x d_out (GPT-2 Conv1D)

    @property
    def param(self) -> torch.Tensor:
        return self.module.weight

    @property
    def shape(self) -> tuple[int, int]:
        """(d_out, d_in) of the matrix in the Linear orientation."""
        rows, cols = self.param.shape
        return (cols, rows) if self.transposed else (rows, cols)

    def weight(self) -> torch.Tensor:
        """The matrix as ``d_out x d_in`` (a view, no copy)."""
        return self.param.t() if self.transposed else self.param

    @torch.no_grad()
    def add_(self, delta: torch.Tensor) -> None:
        """Add a ``d_out x d_in`` change in place, in the parameter's own dtype and device."""
        delta = delta.to(device=self.param.device, dtype=self.param.dtype)
        self.param.add_(delta.t() if self.transposed else delta)

    @torch.no_grad()
    def add_low_rank_(self, left: torch.Tensor, right: torch.Tensor, alpha: float = 1.0) -> None:
        """Add ``alpha * left @ right`` (d_out x r times r x d_in) in place, without a dense temporary."""
        left = left.to(device=self.param.device, dtype=self.param.dtype)
        right = right.to(device=self.param.device, dtype=self.param.dtype)
        if self.transposed:
            self.param.addmm_(right.t(), left.t(), alpha=alpha)
        else:
            self.param.addmm_(left, right, alpha=alpha)


def _is_conv1d(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def resolve_candidates(model: nn.Module, names: list[str]) -> list[Candidate]:
    """Look up each module name; an unknown or unsupported name is an error that names it."""
    if not names:
        raise ValueError("candidates must name at least one module")
    modules = dict(model.named_modules())
    found: list[Candidate] = []
    for name in names:
        module = modules.get(name)
        if module is None:
            close = [n for n in modules if n.endswith(name.split(".")[-1])][:3]
            hint = f" (modules with that suffix: {', '.join(close)})" if close else ""
            raise ValueError(f"unknown candidate module {name!r}{hint}")
        if isinstance(module, nn.Linear):
            found.append(Candidate(name, module, transposed=False))
        elif _is_conv1d(module):
            found.append(Candidate(name, module, transposed=True))
        else:
            raise ValueError(
                f"candidate module {name!r} is a {type(module).__name__}; only nn.Linear and "
                "transformers Conv1D matrices can be edited"
            )
    if len({c.name for c in found}) != len(found):
        raise ValueError("candidates must not repeat a module")
    return found
