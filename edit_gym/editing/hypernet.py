"""The RLEdit hypernetwork: a *learned* update rule, and its checkpoint format.

RLEdit (arXiv 2502.05759) keeps the ridge least-squares rule of :class:`~edit_gym.editing.rules.RidgeRule`
but lets a small network rewrite each (key, value-gradient) row first:

    x = [k, g]                          one row per answer token, per candidate matrix m
    z = (x - mean_m) / std_m            whitening; statistics gathered while training, frozen after
    z <- z + s_bm * relu(z A_b + c_b) B_b + t_bm      b = 1..blocks; A, B, c shared by every matrix
                                                      of the same shape, s, t per matrix
    [k~, g~] = z * std_m + mean_m       back to the input's scale
    D_i = -a_m <k_i, k~_i> g~_i         a_m = exp(log_step_m), learned per matrix
    dW = D^T (K K^T + e^lam_m I)^-1 K   the ridge solve, lam_m learned per matrix

``B`` starts at zero, ``s`` at one, ``t`` at zero and ``a`` at one, so an untrained net *is* the ridge
rule (``tests/test_rledit.py`` pins it). The design notes write the block as relu(z A B + c); with B
at zero that has no gradient (relu'(0) = 0), so the zero factor sits after the ReLU, as in MALMEN.

This module only runs the net; how it is trained lives in ``agents/rledit.py`` (the env knows rules,
not agents). A checkpoint is a folder holding ``hypernet.safetensors`` (tensors only: nothing in it
can run code) and ``hypernet.json`` (format, version, the candidate names and shapes it was trained
for, the net's size, and the SHA-256 of the weights file, checked on load).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from edit_gym.cache import file_sha256

FORMAT = "edit-gym-rledit-hypernet"
VERSION = 1
WEIGHTS_FILE = "hypernet.safetensors"
META_FILE = "hypernet.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, of another format or version, corrupted, or for other candidates."""


@dataclass
class HyperNetConfig:
    """What a hypernet is built for (the candidate matrices) and its size."""

    candidates: list[str]
    shapes: list[tuple[int, int]]  # (d_out, d_in) per candidate
    rank: int = 32
    blocks: int = 2
    init_log_lambda: float = 0.0
    extra: dict = field(default_factory=dict)  # training metadata (dataset, seed, ...), JSON-able

    def __post_init__(self) -> None:
        self.shapes = [tuple(int(x) for x in s) for s in self.shapes]
        if len(self.candidates) != len(self.shapes) or not self.candidates:
            raise ValueError("a hypernet needs one (d_out, d_in) shape per candidate, and at least one")
        if self.rank < 1 or self.blocks < 1:
            raise ValueError(f"rank and blocks must be >= 1, got rank={self.rank}, blocks={self.blocks}")


def _shape_key(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


class RunningStats(nn.Module):
    """Per-matrix running mean and variance of the input rows (Chan's parallel update)."""

    def __init__(self, n_modules: int, width: int) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(n_modules, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_modules, width, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(n_modules, width, dtype=torch.float64))

    @torch.no_grad()
    def update(self, m: int, rows: torch.Tensor) -> None:
        rows = rows.detach().double()
        n = rows.shape[0]
        if n == 0:
            return
        batch_mean = rows.mean(0)
        batch_m2 = ((rows - batch_mean) ** 2).sum(0)
        total = self.count[m] + n
        delta = batch_mean - self.mean[m]
        self.mean[m] += delta * (n / total)
        self.m2[m] += batch_m2 + delta**2 * (self.count[m] * n / total)
        self.count[m] = total

    def moments(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as float32; identity (0, 1) until two rows have been seen."""
        if float(self.count[m]) < 2:
            width = self.mean.shape[1]
            return torch.zeros(width, device=self.mean.device), torch.ones(width, device=self.mean.device)
        std = (self.m2[m] / self.count[m]).sqrt()
        std = torch.where(std > 1e-8 * std.max().clamp_min(1e-30), std, torch.ones_like(std))
        return self.mean[m].float(), std.float()


class ShapeNet(nn.Module):
    """Residual low-rank blocks shared by every matrix of one shape, with per-matrix scale and shift."""

    def __init__(self, width: int, n_modules: int, rank: int, blocks: int) -> None:
        super().__init__()
        self.down = nn.ModuleList([nn.Linear(width, rank) for _ in range(blocks)])
        self.up = nn.ModuleList([nn.Linear(rank, width, bias=False) for _ in range(blocks)])
        for up in self.up:
            nn.init.zeros_(up.weight)  # the net starts as the identity
        self.scale = nn.Parameter(torch.ones(blocks, n_modules, width))
        self.shift = nn.Parameter(torch.zeros(blocks, n_modules, width))

    def forward(self, z: torch.Tensor, m: int) -> torch.Tensor:
        for b, (down, up) in enumerate(zip(self.down, self.up, strict=True)):
            z = z + self.scale[b, m] * up(torch.relu(down(z))) + self.shift[b, m]
        return z


class HyperNet(nn.Module):
    """One :class:`ShapeNet` per candidate shape, plus per-matrix step sizes and ridge strengths."""

    def __init__(self, config: HyperNetConfig) -> None:
        super().__init__()
        self.config = config
        groups: dict[str, list[int]] = {}
        for j, shape in enumerate(config.shapes):
            groups.setdefault(_shape_key(shape), []).append(j)
        self.slot = {j: (key, members.index(j)) for key, members in groups.items() for j in members}
        self.nets = nn.ModuleDict(
            {
                key: ShapeNet(sum(config.shapes[m[0]]), len(m), config.rank, config.blocks)
                for key, m in groups.items()
            }
        )
        self.stats = nn.ModuleDict(
            {key: RunningStats(len(m), sum(config.shapes[m[0]])) for key, m in groups.items()}
        )
        n = len(config.candidates)
        self.log_step = nn.Parameter(torch.zeros(n))
        self.log_lambda = nn.Parameter(torch.full((n,), float(config.init_log_lambda)))
        self.frozen_stats = False  # set by freeze_statistics(); saved checkpoints load frozen

    @property
    def device(self) -> torch.device:
        return self.log_step.device

    def freeze_statistics(self, frozen: bool = True) -> None:
        """Stop (or resume) updating the whitening statistics. Evaluation always runs frozen."""
        self.frozen_stats = frozen

    def observe(self, j: int, keys: torch.Tensor, grads: torch.Tensor) -> None:
        """Fold one request's rows into matrix ``j``'s whitening statistics (training only)."""
        if self.training and not self.frozen_stats:
            key, m = self.slot[j]
            self.stats[key].update(m, torch.cat([keys, grads], dim=1).to(self.device))

    def transform(self, j: int, keys: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k~, g~): the rows as the net rewrites them (same shapes as ``keys`` and ``grads``)."""
        key, m = self.slot[j]
        mean, std = self.stats[key].moments(m)
        x = torch.cat([keys, grads], dim=1).to(self.device).float()
        z = self.nets[key]((x - mean) / std, m) * std + mean
        d_in = keys.shape[1]
        return z[:, :d_in], z[:, d_in:]

    def factors(self, j: int, keys: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The update of matrix ``j`` as ``left @ right`` (d_out x N, N x d_in), differentiable in the net.

        ``right`` is the keys themselves, so the language model's graph never needs the net: a
        gradient dL/d(dW) reaches the net through ``left`` alone (see ``agents/rledit.py``).
        """
        keys = keys.to(self.device).float()
        k_t, g_t = self.transform(j, keys, grads)
        desired = -self.log_step[j].exp() * (keys * k_t).sum(1, keepdim=True) * g_t  # N x d_out
        gram = keys @ keys.T
        gram = gram + self.log_lambda[j].exp() * torch.eye(len(keys), device=keys.device)
        return torch.linalg.solve(gram, desired).T, keys

    def check_candidates(self, names: list[str], shapes: list[tuple[int, int]]) -> None:
        """Raise :class:`CheckpointError` unless this net was built for exactly these matrices."""
        mine = list(zip(self.config.candidates, self.config.shapes, strict=True))
        theirs = [(n, tuple(s)) for n, s in zip(names, shapes, strict=True)]
        if mine != theirs:
            diff = next(
                (f"{a} vs {b}" for a, b in zip(mine, theirs, strict=False) if a != b),
                f"{len(mine)} vs {len(theirs)} candidates",
            )
            raise CheckpointError(
                "this RLEdit checkpoint was trained for other candidate matrices than the environment's "
                f"(first difference, checkpoint vs env: {diff})"
            )


def verify_sha256(path: Path, expected: str | None, meta_name: str) -> None:
    """Refuse a checkpoint file whose SHA-256 is not the one its metadata ``meta_name`` records."""
    if file_sha256(path) != expected:
        raise CheckpointError(f"{path} does not match the checksum in {meta_name} (corrupted or partial)")


def write_hypernet(net: HyperNet, folder: Path) -> None:
    """Write the net's tensors and metadata into ``folder`` (use inside an atomic folder write)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": asdict(net.config),
        "sha256": file_sha256(folder / WEIGHTS_FILE),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))


def save_hypernet(net: HyperNet, folder: str | Path) -> Path:
    """Save atomically: ``folder`` is always either the previous checkpoint or this one."""
    from edit_gym.cache import atomic_write_folder

    atomic_write_folder(Path(folder), lambda tmp: write_hypernet(net, tmp))
    return Path(folder)


def load_hypernet(folder: str | Path, device: torch.device | str = "cpu") -> HyperNet:
    """Load a checkpoint folder (verified: format, version, checksum); statistics come back frozen."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise CheckpointError(
            f"{folder} is not an RLEdit checkpoint folder (needs {META_FILE} and {WEIGHTS_FILE}; "
            "train one with `edit-gym train rledit --out DIR`)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: format is not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{meta_path}: version {meta.get('version')!r}, this edit-gym reads {VERSION}")
    verify_sha256(weights_path, meta.get("sha256"), META_FILE)
    try:
        net = HyperNet(HyperNetConfig(**meta["config"]))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{meta_path}: invalid hypernet config ({err})") from None
    try:
        tensors = load_file(str(weights_path))  # safetensors: parsing never runs code from the file
    except Exception as err:  # noqa: BLE001 - any parse failure means "not a safetensors file"
        raise CheckpointError(
            f"{weights_path} is not a safetensors file ({type(err).__name__}: {err})"
        ) from None
    try:
        net.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{weights_path} does not fit its own config: {err}") from None
    net.freeze_statistics()
    return net.to(device).eval()


def trained_candidates(folder: str | Path) -> list[str]:
    """The candidate module names a checkpoint was trained for (reads only its JSON metadata).

    An env whose ``candidates`` are not given edits exactly these when its editor is the
    checkpoint, so a net trained on a band of layers is used on that band.
    """
    meta_path = Path(folder) / META_FILE
    try:
        names = json.loads(meta_path.read_text())["config"]["candidates"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{folder} is not a readable RLEdit checkpoint folder ({type(err).__name__}: {err}); "
            "train one with `edit-gym train rledit --out DIR`"
        ) from None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{meta_path}: config.candidates is not a list of module names")
    return names


class LearnedRule:
    """A trained hypernet as an environment update rule (``editor="rledit:PATH"``)."""

    name = "rledit"

    def __init__(self, net: HyperNet, names: list[str], shapes: list[tuple[int, int]]) -> None:
        net.check_candidates(names, shapes)
        self.net = net.eval()
        self.net.freeze_statistics()

    @classmethod
    def from_checkpoint(cls, path: str | Path, candidates) -> LearnedRule:
        device = candidates[0].param.device
        return cls(load_hypernet(path, device), [c.name for c in candidates], [c.shape for c in candidates])

    @torch.no_grad()
    def update(self, j: int, keys: torch.Tensor, grads: torch.Tensor, weight: torch.Tensor):
        from edit_gym.editing.rules import Update

        left, right = self.net.factors(j, keys, grads)
        return Update(left.to(keys.device), right.to(keys.device))
