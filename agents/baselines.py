"""Non-learned baseline policies: which candidates to edit, at a fixed coefficient.

* :class:`AllCandidatesAgent` - every candidate (what RLEdit does).
* :class:`FixedBlockAgent` - a fixed contiguous block of candidates.
* :class:`BandAgent` - the env's named method's own band on this backbone (MEMIT's / AlphaEdit's
  recipe: ``env.unwrapped.method.band()``).
* :class:`RandomKAgent` - K candidates drawn at random for each edit.
* :class:`TopKGradientAgent` - the K candidates with the largest fine-tuning gradient norm
  (``layer_stats`` column ``log10_grad_norm``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edit_gym.actions import encode_action
from edit_gym.env import LAYER_STATS

GRAD_NORM_COLUMN = [name for name, *_ in LAYER_STATS].index("log10_grad_norm")


class _MaskAgent:
    """Shared plumbing: read the env's action layout and encode a (mask, coef) choice."""

    def __init__(self, env: Any, coef: float = 0.0) -> None:
        inner = env.unwrapped
        self.num_candidates = inner.num_candidates
        self.action_type = inner.cfg.action_type
        self.coef_levels = inner.cfg.coef_levels
        self.budget = inner.cfg.budget  # the env's layer budget K, if it has one
        self.coef = float(coef)

    def choose(self, obs: dict) -> np.ndarray:
        raise NotImplementedError

    def _size(self, k: int | None) -> int:
        """How many candidates a K-agent selects: ``k``, else the env's budget, else half of them."""
        k = k if k is not None else (self.budget or max(1, self.num_candidates // 2))
        limit = min(self.num_candidates, self.budget or self.num_candidates)
        if not 1 <= k <= limit:
            raise ValueError(f"k={k} must be between 1 and {limit} (candidates, or the env's budget)")
        return k

    def predict(self, obs: dict, state=None, episode_start=None, deterministic: bool = True):
        """SB3-style: returns (action, state)."""
        mask = self.choose(obs)
        return encode_action(
            mask, np.full(self.num_candidates, self.coef), self.action_type, self.coef_levels, self.budget
        ), state


class AllCandidatesAgent(_MaskAgent):
    """Edit every candidate."""

    def choose(self, obs: dict) -> np.ndarray:
        return np.ones(self.num_candidates, dtype=bool)


class FixedBlockAgent(_MaskAgent):
    """Edit ``size`` contiguous candidates starting at ``start`` (default: the lower-middle third)."""

    def __init__(
        self, env: Any, start: int | None = None, size: int | None = None, coef: float = 0.0
    ) -> None:
        super().__init__(env, coef)
        n = self.num_candidates
        self.size = size if size is not None else max(1, n // 3)
        self.start = start if start is not None else max(0, min(n - self.size, n // 6))
        if not (self.start >= 0 and self.start + self.size <= n and self.size >= 1):
            raise ValueError(f"block start={self.start} size={self.size} does not fit {n} candidates")

    def choose(self, obs: dict) -> np.ndarray:
        mask = np.zeros(self.num_candidates, dtype=bool)
        mask[self.start : self.start + self.size] = True
        return mask


class BandAgent(_MaskAgent):
    """Edit the candidates of the env's method band (the paper's recipe for this backbone)."""

    def __init__(self, env: Any, coef: float = 0.0) -> None:
        super().__init__(env, coef)
        method = getattr(env.unwrapped, "method", None)
        if method is None:
            raise ValueError(
                f"the band agent needs a named method as the env's editor (rome, memit, alphaedit, ...), "
                f"not the one-step rule {env.unwrapped.cfg.editor!r}"
            )
        self.band = method.band()
        if self.budget is not None and len(self.band) > self.budget:
            raise ValueError(
                f"the method's band has {len(self.band)} candidates, above the env's budget {self.budget}"
            )

    def choose(self, obs: dict) -> np.ndarray:
        mask = np.zeros(self.num_candidates, dtype=bool)
        mask[self.band] = True
        return mask


class RandomKAgent(_MaskAgent):
    """Edit ``k`` candidates drawn uniformly for each request (default: the env's budget, else half)
    among those the env can write (all of them, except above the band's top under
    ``target_block="band"``)."""

    def __init__(self, env: Any, k: int | None = None, seed: int = 0, coef: float = 0.0) -> None:
        super().__init__(env, coef)
        self.k = self._size(k)
        self.pool = np.flatnonzero(env.unwrapped.writable())
        if self.k > len(self.pool):
            raise ValueError(f"k={self.k} is more than the {len(self.pool)} candidates the env can write")
        self.rng = np.random.default_rng(seed)

    def choose(self, obs: dict) -> np.ndarray:
        mask = np.zeros(self.num_candidates, dtype=bool)
        mask[self.rng.choice(self.pool, self.k, replace=False)] = True  # same draws as over range(L)
        return mask

    def episode_state(self) -> dict:
        """The draws' RNG state (a resumed stream checkpoint continues the same draws)."""
        return self.rng.bit_generator.state

    def load_episode_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


class TopKGradientAgent(_MaskAgent):
    """Edit the ``k`` candidates whose fine-tuning gradient for this request is largest."""

    def __init__(self, env: Any, k: int | None = None, coef: float = 0.0) -> None:
        super().__init__(env, coef)
        self.k = self._size(k)

    def choose(self, obs: dict) -> np.ndarray:
        scores = np.asarray(obs["layer_stats"])[:, GRAD_NORM_COLUMN]
        mask = np.zeros(self.num_candidates, dtype=bool)
        mask[np.argsort(-scores, kind="stable")[: self.k]] = True
        return mask
