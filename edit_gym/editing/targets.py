"""The target stage: the hidden state at the edit site that makes the model say the new answer.

``optimized`` (ROME / MEMIT ``compute_v`` / ``compute_z``): a vector delta_i per request, added to
the output of the target block (the top edited layer) at the subject's last token of every
sequence of the request (its rewrite prompts under each context template and its KL prompt), is
optimized with Adam on

    loss_i = mean_t NLL(target | template_t(prompt)) / len(target)
             + kl_factor * KL(p_now || p_start) at the subject's last token of "{subject} is a"
             + weight_decay * ||delta_i|| / ||h_i||^2,

with ||delta_i|| clamped to ``clamp_norm_factor * ||h_i||`` after every step (h_i: the block's
output at the plain prompt). The requests of a step are batched: each has its own delta and its
own loss, so their trajectories are those of one-at-a-time runs (Adam is element-wise), and a
request stops on its own when its NLL falls below ``early_stop_nll`` (see :data:`TARGET_DEFAULTS`).
The blocks up to the target block do not depend on delta: they run once, and every Adam step runs
only the blocks above it (the lower blocks replay their recorded output).

``gradient`` (the cheap mode): one gradient step instead of the optimization,
delta_i = -step * ||k_i||^2 * dNLL_i/dh_i, the change a single fine-tuning step of the target
block's matrix would make at that site (the MALMEN / RLEdit world of :mod:`edit_gym.editing.rules`).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from edit_gym.editing.keys import SiteBatch, StopForward
from edit_gym.editing.scores import answer_logits

TARGET_MODES = ("optimized", "gradient")

# ROME / MEMIT / AlphaEdit hyper-parameters of the target (their hparams files); methods override
# them per backbone in edit_gym.editing.methods.
TARGET_DEFAULTS = {
    "v_num_grad_steps": 25,
    "v_lr": 0.5,
    "v_weight_decay": 0.5,
    "clamp_norm_factor": 4.0,
    "kl_factor": 0.0625,
    # MEMIT stops when the *total* loss < 5e-2; on small models the KL term alone stays above that
    # (field notes: ~0.07), so the check reads the target's NLL.
    "early_stop_nll": 5e-2,
    # compute the positions before each site once, as cached keys/values (same result, faster)
    "prefix_cache": True,
}


@dataclass
class Target:
    """The outcome of the target stage for the requests of one step."""

    layer: int  # the target block
    z: torch.Tensor  # (n, d) desired hidden state at the site (h + delta)
    delta: torch.Tensor  # (n, d)
    h: torch.Tensor  # (n, d) the block's output at the site before any write
    nll: list[float]  # per request, the target NLL at the returned delta (mean over templates)
    steps: list[int]  # per request, Adam steps taken
    fault: str = ""  # non-empty if the optimization diverged (nothing may be written then)
    iterations: int = 0  # forward passes of the upper blocks (each but the last with a backward)


def _request_nll(
    token_nll: torch.Tensor, token_row: torch.Tensor, num_rows: int, num_requests: int, num_templates: int
) -> torch.Tensor:
    """Per request, the mean over its templates of each row's mean answer-token NLL. Rows are
    request-major (request i's templates are rows i*T .. i*T+T-1); rows past the first
    ``num_requests * num_templates`` (e.g. KL prompts) have no answer tokens and are dropped."""
    zeros = torch.zeros(num_rows, device=token_nll.device)
    count = zeros.index_add(0, token_row, torch.ones_like(token_nll)).clamp_min(1)
    per_row = zeros.index_add(0, token_row, token_nll) / count
    return per_row[: num_requests * num_templates].reshape(num_requests, num_templates).mean(1)


@contextmanager
def _replay_lower_blocks(blocks, top: int, recorded):
    """Blocks 0..top return ``recorded`` (the top block's output) instead of computing."""
    saved = []
    try:
        for j in range(top + 1):
            module = blocks[j]
            saved.append(module)
            module.forward = lambda *args, **kwargs: recorded
        yield
    finally:
        for module in saved:
            del module.forward


def _add_at_sites(rows: torch.Tensor, cols: torch.Tensor, values_fn):
    def hook(_m, _args, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h.index_put((rows, cols), values_fn().to(h.dtype), accumulate=True)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    return hook


def _losses(logp_rows, sites: SiteBatch, answer_rows, kl_rows, kl_start):
    """Per-request (NLL mean over templates, KL) from the log-probs at the selected positions."""
    n, t = sites.num_requests, sites.num_templates
    labels = sites.labels[sites.answer_mask]
    token_nll = -logp_rows[answer_rows].gather(1, labels[:, None])[:, 0]
    seq_of_token = sites.answer_mask.nonzero()[:, 0]
    per_seq = torch.zeros(n * t, device=logp_rows.device).index_add(0, seq_of_token, token_nll)
    lengths = sites.answer_mask[: n * t].sum(1).clamp_min(1)
    nll = (per_seq / lengths).reshape(n, t).mean(1)
    kl_now = logp_rows[kl_rows]
    if kl_start is None:
        return nll, torch.zeros(n, device=nll.device), kl_now.detach()
    kl = (kl_now.exp() * (kl_now - kl_start)).sum(1)  # KL(now || start)
    return nll, kl, kl_start


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask as the additive float mask every attention implementation takes."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


class _Packed:
    """A step's sequences for the Adam loop: prefixes cached once, the rest packed without padding.

    Nothing before a sequence's site (the subject's last token) depends on delta (attention is
    causal), so with ``prefix_cache`` those positions run once and stay as keys and values; every
    Adam step then computes only each sequence's *live* part: the site, the rest of the prompt and
    the target up to its last predicting position (the KL sequences: the site alone). The live
    parts of all sequences are packed into one row with a block-causal mask, so no step computes
    padding. Without ``prefix_cache`` the live part is the whole sequence (same result, slower).
    """

    def __init__(self, model, sites: SiteBatch, prefix_cache: bool) -> None:
        from transformers import DynamicCache

        self.base = model.base_model
        names = inspect.signature(self.base.forward).parameters
        self.cache_arg = "cache" if "cache" in names else "past_key_values"
        self.dynamic = DynamicCache
        self.dtype = model.dtype
        self.sites = sites
        device = sites.input_ids.device
        b = sites.input_ids.shape[0]
        lengths = sites.attention_mask.sum(1)
        last = torch.where(
            sites.answer_mask.any(1),
            (sites.answer_mask * torch.arange(sites.input_ids.shape[1], device=device)).amax(1),
            sites.lookup,
        )  # the last position whose output the loss reads
        self.split = sites.lookup if prefix_cache else torch.zeros_like(sites.lookup)
        self.stop = torch.minimum(last, lengths - 1)
        self.p_len = int(self.split.max())
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.p_len:
            cols = torch.arange(self.p_len, device=device)
            real = cols[None] < self.split[:, None]
            ids = torch.where(real, sites.input_ids[:, : self.p_len], sites.input_ids[:, :1])
            causal = cols[None, :] <= cols[:, None]
            allowed = causal[None] & (
                real[:, None, :] | torch.eye(self.p_len, dtype=torch.bool, device=device)[None]
            )
            cache = DynamicCache(config=model.config)
            with torch.no_grad():
                self.base(
                    input_ids=ids,
                    attention_mask=_additive(allowed[:, None], self.dtype),
                    position_ids=cols[None].expand(b, -1),
                    use_cache=True,
                    **{self.cache_arg: cache},
                )
            self.kv = [(layer.keys, layer.values) for layer in cache.layers]
            self.prefix_real = real

    def build(self, rows: torch.Tensor) -> dict:
        """Packed inputs of ``rows`` and where their sites, answer tokens and KL sites sit."""
        sites, device = self.sites, self.sites.input_ids.device
        counts = (self.stop[rows] - self.split[rows] + 1).tolist()
        row_of = torch.repeat_interleave(
            torch.arange(len(counts), device=device), torch.tensor(counts, device=device)
        )
        starts = torch.tensor([0] + counts[:-1], device=device).cumsum(0)
        offset = torch.arange(len(row_of), device=device) - starts[row_of]
        col = self.split[rows][row_of] + offset  # position in the original sequence
        full_row = rows[row_of]
        ids = sites.input_ids[full_row, col]
        t = len(ids)
        same = row_of[:, None] == row_of[None, :]
        allowed = same & (offset[None, :] <= offset[:, None])
        kv = []
        if self.p_len:
            kv_row = torch.arange(len(rows), device=device).repeat_interleave(self.p_len)
            kv_real = self.prefix_real[rows].reshape(-1)
            allowed = torch.cat([(row_of[:, None] == kv_row[None, :]) & kv_real[None, :], allowed], dim=1)
            for k, v in self.kv:  # (r, heads, P, hd) -> (1, heads, r * P, hd)
                k, v = k[rows], v[rows]
                kv.append(
                    (
                        k.permute(1, 0, 2, 3).reshape(1, k.shape[1], -1, k.shape[3]),
                        v.permute(1, 0, 2, 3).reshape(1, v.shape[1], -1, v.shape[3]),
                    )
                )
        inputs = {
            "input_ids": ids[None],
            "attention_mask": _additive(allowed[None, None], self.dtype),
            "position_ids": col[None],
        }
        is_site = col == sites.lookup[full_row]
        answer = sites.answer_mask[full_row, col]
        kl = is_site & (full_row >= sites.num_rewrite)
        return {
            "inputs": inputs,
            "kv": kv,
            "site": is_site.nonzero()[:, 0],  # one per row, in row order
            "answer": answer.nonzero()[:, 0],
            "labels": sites.labels[full_row, col][answer],
            "answer_row": row_of[answer],
            "kl": kl.nonzero()[:, 0],
            "length": t,
        }

    def inputs(self, layout: dict) -> dict:
        """A layout's model inputs, with a fresh cache holding its prefixes (each forward appends)."""
        if not layout["kv"]:
            return dict(layout["inputs"])
        cache = self.dynamic()
        for i, (k, v) in enumerate(layout["kv"]):
            cache.update(k, v, i)
        return {**layout["inputs"], "use_cache": True, self.cache_arg: cache}


def optimize_target(
    model: torch.nn.Module,
    blocks: torch.nn.ModuleList,
    layer: int,
    sites: SiteBatch,
    params: dict | None = None,
) -> Target:
    """ROME / MEMIT's v*: the optimized hidden state at ``layer``'s output (see the module doc).

    ``blocks`` is the model's block list: blocks ``0..layer`` run once, then replay their output.
    A request that reaches ``early_stop_nll`` leaves the batch: later steps compute only the others.
    """
    p = {**TARGET_DEFAULTS, **(params or {})}
    block = blocks[layer]
    n, t = sites.num_requests, sites.num_templates
    packed = _Packed(model, sites, bool(p["prefix_cache"]))

    def rows_of(requests: torch.Tensor) -> torch.Tensor:
        rw = (requests[:, None] * t + torch.arange(t, device=requests.device)).reshape(-1)
        return torch.cat([rw, sites.num_rewrite + requests])

    every = torch.arange(n, device=sites.input_ids.device)
    layout = packed.build(rows_of(every))
    recorded: list = []

    def record(_m, _a, out):
        recorded.append(out)
        raise StopForward

    handle = block.register_forward_hook(record)
    try:
        with torch.no_grad():
            packed.base(**packed.inputs(layout))
    except StopForward:
        pass
    finally:
        handle.remove()
    out0 = recorded[0]
    is_tuple = isinstance(out0, tuple)
    h_all = (out0[0] if is_tuple else out0)[0]  # (T, d) over the packed live tokens of every row
    full_index = layout["site"]  # packed position of each row's site
    h = h_all[full_index[sites.plain]].float()
    h_norm = h.norm(dim=1).clamp_min(1e-12)
    # each row's live tokens, in the packed order of all rows (to cut the replay for a subset)
    token_row = torch.repeat_interleave(
        torch.arange(len(full_index), device=h.device),
        (packed.stop - packed.split + 1)[rows_of(every)],
    )

    delta = torch.zeros_like(h, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=float(p["v_lr"]))
    done = torch.zeros(n, dtype=torch.bool, device=h.device)
    steps = torch.zeros(n, dtype=torch.long)
    nll_out = torch.full((n,), float("nan"))
    kl_start: torch.Tensor | None = None  # (n, V) log-probs at delta = 0
    max_steps = int(p["v_num_grad_steps"])
    fault = ""
    it = 0
    active_key = None
    with torch.enable_grad():
        for it in range(max_steps):
            active = (~done).nonzero()[:, 0]
            if active_key != tuple(active.tolist()):  # re-pack the requests still optimizing
                active_key = tuple(active.tolist())
                rows = rows_of(active)
                lay = packed.build(rows)
                keep_tokens = torch.isin(token_row, rows)  # row ids are positions in the full layout
                replay = h_all[keep_tokens][None]
                replay_out = (replay, *out0[1:]) if is_tuple else replay
                k = len(active)
                row_request = torch.cat(
                    [torch.arange(k, device=h.device).repeat_interleave(t), torch.arange(k, device=h.device)]
                )
                logit_pos = torch.cat([lay["answer"], lay["kl"]])
                mask = torch.zeros(1, lay["length"], dtype=torch.bool, device=h.device)
                mask[0, logit_pos] = True
                order = torch.argsort(logit_pos)  # answer_logits returns rows in position order
                where = torch.empty_like(order)
                where[order] = torch.arange(len(order), device=h.device)
                answer_at, kl_at = where[: len(lay["answer"])], where[len(lay["answer"]) :]
            owner = active[row_request]
            hook = _add_at_sites(torch.zeros_like(lay["site"]), lay["site"], lambda owner=owner: delta[owner])
            handle = block.register_forward_hook(hook)
            try:
                with _replay_lower_blocks(blocks, layer, replay_out):
                    logits = answer_logits(model, mask, **packed.inputs(lay))
            finally:
                handle.remove()
            logp = torch.log_softmax(logits.float(), dim=-1)
            token_nll = -logp[answer_at].gather(1, lay["labels"][:, None])[:, 0]
            nll = _request_nll(token_nll, lay["answer_row"], len(rows), k, t)
            kl_now = logp[kl_at]
            if kl_start is None:
                kl_start = kl_now.detach()
            kl = (kl_now.exp() * (kl_now - kl_start[active])).sum(1)  # KL(now || start)
            wd = float(p["v_weight_decay"]) * delta[active].norm(dim=1) / h_norm[active] ** 2
            loss = nll + float(p["kl_factor"]) * kl + wd
            if not bool(torch.isfinite(loss).all()):
                bad = int(active[(~torch.isfinite(loss)).nonzero()[0, 0]])
                fault = f"target optimization diverged for request {bad} at step {it} (loss not finite)"
                break
            nll_out[active.cpu()] = nll.detach().cpu()
            converged = nll.detach() < float(p["early_stop_nll"])
            done[active[converged]] = True
            if bool(done.all()) or it == max_steps - 1:
                break
            opt.zero_grad()
            loss.sum().backward()
            frozen = done.clone()
            keep = delta.detach()[frozen].clone()
            opt.step()
            with torch.no_grad():
                delta[frozen] = keep
                limit = float(p["clamp_norm_factor"]) * h_norm
                norm = delta.norm(dim=1)
                scale = torch.where(norm > limit, limit / norm.clamp_min(1e-12), torch.ones_like(norm))
                delta.mul_(scale[:, None])
            steps[(~frozen).cpu()] += 1
    d = delta.detach()
    if not fault and not bool(torch.isfinite(d).all()):
        fault = "target optimization gave a non-finite delta"
    return Target(
        layer=layer,
        z=h + d,
        delta=d,
        h=h,
        nll=[float(x) for x in nll_out],
        steps=[int(s) for s in steps],
        fault=fault,
        iterations=it + 1,
    )


def gradient_target(
    model: torch.nn.Module,
    blocks: torch.nn.ModuleList,
    layer: int,
    sites: SiteBatch,
    key_module: torch.nn.Module,
    step: float,
) -> Target:
    """One gradient step at the site: delta_i = -step * ||k_i||^2 * dNLL_i/dh_i (see the module doc)."""
    block = blocks[layer]
    rw = sites.rewrite_only()
    plain_rows = rw.plain
    grabbed: dict[str, torch.Tensor] = {}

    def block_hook(_m, _a, out):
        h = out[0] if isinstance(out, tuple) else out
        h.retain_grad()
        grabbed["h"] = h

    def key_hook(_m, args, _out):
        grabbed["k"] = args[0].detach()[plain_rows, rw.lookup[plain_rows]].float()

    handles = [block.register_forward_hook(block_hook), key_module.register_forward_hook(key_hook)]
    try:
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(rw.input_ids).detach().requires_grad_(True)
            logits = answer_logits(
                model, rw.answer_mask, inputs_embeds=embeds, attention_mask=rw.attention_mask
            )
            logp = torch.log_softmax(logits.float(), dim=-1)
            labels = rw.labels[rw.answer_mask]
            token_nll = -logp.gather(1, labels[:, None])[:, 0]
            row_of_token = rw.answer_mask.nonzero()[:, 0]
            nll = _request_nll(
                token_nll, row_of_token, rw.input_ids.shape[0], sites.num_requests, sites.num_templates
            )
            nll.sum().backward()
    finally:
        for hd in handles:
            hd.remove()
    hid = grabbed["h"]
    h = hid.detach()[plain_rows, rw.lookup[plain_rows]].float()
    g = hid.grad[plain_rows, rw.lookup[plain_rows]].float()
    k = grabbed["k"]
    delta = -step * (k * k).sum(1, keepdim=True) * g
    fault = "" if bool(torch.isfinite(delta).all()) else "gradient target is not finite"
    return Target(
        layer=layer,
        z=h + delta,
        delta=delta,
        h=h,
        nll=[float(x) for x in nll.detach()],
        steps=[0] * sites.num_requests,
        fault=fault,
        iterations=1,
    )
