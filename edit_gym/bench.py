"""Speed measurements of the environment, shared by ``edit-gym bench`` and ``benchmarks/``.

Every figure is a ratio or a median measured inside one run, so machine load cancels out as far
as it can: the env step against the model passes it needs, an edit against one forward+backward
of the model, and a step late in a stream against one early in it (interleaved).

* :func:`step_overhead`: ``env.step`` vs the two model passes a step needs (one forward+backward
  over the edit prompt for keys, value-gradients and statistics; one forward over the edit prompt
  and its neighbourhood for the post-edit scores), and peak resident memory.
* :func:`edit_latency`: per editor, the forward+backward alone, the rule's update of every
  candidate and its application alone, and the whole ``env.step``.
* :func:`optimized_edit_latency`: the optimization-based reference (FT-L style: Adam steps on
  every candidate) against the same forward+backward.
* :func:`cost_growth`: seconds per step at edit ~10 vs edit ~N (two envs on one stream, stepping
  in turns so both run under the same load).
* :func:`vector_memory`: peak resident memory of a SyncVectorEnv of N sub-envs after a few steps
  (run each N in a fresh process; the sub-envs share one loaded model, see ``share_model``).
"""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np


def _all_candidates(n: int) -> dict:
    return {"mask": np.ones(n, np.int8), "coef": np.zeros(n, np.float32)}


def _model_passes(env: Any, step: int) -> float:
    """Seconds for the two model passes of one step, on the current weights."""
    from edit_gym.editing.capture import capture
    from edit_gym.editing.scores import answer_logprobs

    reqs = [env.requests[i] for i in env._batch_requests(step)]
    enc, device = env.encoder, env.device
    edit = enc.encode([(r.prompt, r.target_new) for r in reqs], device=device)
    probes = [(r.prompt, r.target_new) for r in reqs] + [
        (p.prompt, p.answer) for r in reqs for p in r.neighbourhood
    ]
    post = enc.encode(probes, device=device)
    start = time.perf_counter()
    capture(env.model, env.candidates, edit)
    answer_logprobs(env.model, post)
    return time.perf_counter() - start


def step_overhead(env_id: str, steps: int = 10, seed: int = 0) -> dict:
    """Median ``env.step`` seconds, median model-pass seconds, their ratio, and peak RSS (MiB).

    Peak memory is the whole process's: run each id in a fresh process (``edit-gym bench`` does).
    """
    from edit_gym.env import LifelongEditEnv
    from edit_gym.registration import env_ids

    kwargs = {**env_ids()[env_id], "num_edits": steps + 1, "final_eval": False}
    env = LifelongEditEnv(**kwargs)
    action = _all_candidates(env.num_candidates)
    env.reset(seed=seed)
    env.step(action)  # warm-up
    step_times, pass_times = [], []
    for _ in range(steps):
        pass_times.append(_model_passes(env, env._t))
        start = time.perf_counter()
        env.step(action)
        step_times.append(time.perf_counter() - start)
    step_s, pass_s = float(np.median(step_times)), float(np.median(pass_times))
    return {
        "id": env_id,
        "candidates": env.num_candidates,
        "step_s": step_s,
        "steps_per_s": 1.0 / step_s,
        "passes_s": pass_s,
        "overhead_ratio": step_s / pass_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def edit_latency(model: str, dataset: str, editor: str, steps: int = 10, seed: int = 0) -> dict:
    """Median seconds of one forward+backward, of the update alone, and of ``env.step``, per editor."""
    import torch

    from edit_gym.editing.capture import capture
    from edit_gym.env import LifelongEditEnv

    env = LifelongEditEnv(model=model, dataset=dataset, known_only=False, num_edits=steps + 2, editor=editor)
    n = env.num_candidates
    action = _all_candidates(n)
    scales = env.update_scales(np.ones(n, bool), np.zeros(n))
    env.reset(seed=seed)
    env.step(action)  # warm-up
    fb, upd, step = [], [], []
    for _ in range(steps):
        req = env.stream[env._t]
        batch = env.encoder.encode([(req.prompt, req.target_new)], device=env.device)
        start = time.perf_counter()
        cap = capture(env.model, env.candidates, batch)
        fb.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            updates = [
                env._rule.update(j, cap.keys[j], cap.grads[j], c.weight())
                for j, c in enumerate(env.candidates)
            ]
            weights = [c.param.detach().clone() for c in env.candidates]
            for j, u in enumerate(updates):
                u.apply_(env.candidates[j], float(scales[j]))
                env._rule.restrain(j)
            upd.append(time.perf_counter() - start)
            for c, w in zip(env.candidates, weights, strict=True):  # undo: the env step below edits
                c.param.copy_(w)
        start = time.perf_counter()
        env.step(action)
        step.append(time.perf_counter() - start)
    fb_s, upd_s, step_s = (float(np.median(x)) for x in (fb, upd, step))
    return {
        "editor": editor,
        "candidates": n,
        "fwd_bwd_s": fb_s,
        "update_s": upd_s,
        "step_s": step_s,
        "edit_over_fwd_bwd": (fb_s + upd_s) / fb_s,
        "step_over_fwd_bwd": step_s / fb_s,
    }


def optimized_edit_latency(
    model: str, dataset: str, iterations: int = 25, lr: float = 5e-4, steps: int = 10, seed: int = 0
) -> dict:
    """Median seconds of an optimization-based edit (FT-L style) vs one forward+backward, in one run.

    The reference the RLEdit paper compares against: every candidate matrix is fine-tuned by Adam
    on the edit prompt's answer cross-entropy for ``iterations`` steps (EasyEdit's FT default is 25
    at lr 5e-4), as FT-L, and as ROME / MEMIT do for their target value before the write. It is
    measured on each of ``steps`` requests of a seeded stream, with the weights restored after each,
    and reported as ``edit_over_fwd_bwd`` beside the forward+backward of :func:`capture` timed on
    the same requests. The answer loss before and after shows that the optimization does its work.
    """
    import torch

    from edit_gym.editing.capture import capture
    from edit_gym.editing.scores import answer_logits
    from edit_gym.env import LifelongEditEnv

    if iterations < 1 or steps < 1 or not lr > 0:
        raise ValueError(f"need iterations >= 1, steps >= 1 and lr > 0, got {iterations}, {steps}, {lr}")
    env = LifelongEditEnv(model=model, dataset=dataset, known_only=False, num_edits=steps + 1)
    env.reset(seed=seed)
    params = [c.param for c in env.candidates]
    pristine = [p.detach().clone() for p in params]

    def answer_loss(batch) -> torch.Tensor:
        logits = answer_logits(
            env.model, batch.answer_mask, input_ids=batch.input_ids, attention_mask=batch.attention_mask
        )
        return torch.nn.functional.cross_entropy(logits.float(), batch.labels[batch.answer_mask])

    fb, opt, before, after = [], [], [], []
    try:
        for p in params:
            p.requires_grad_(True)
        for i in range(steps + 1):  # request 0 warms up and is not counted
            req = env.stream[i]
            batch = env.encoder.encode([(req.prompt, req.target_new)], device=env.device)
            start = time.perf_counter()
            capture(env.model, env.candidates, batch)
            fb_s = time.perf_counter() - start
            optimizer = torch.optim.Adam(params, lr=lr)
            start = time.perf_counter()
            with torch.enable_grad():
                for _ in range(iterations):
                    optimizer.zero_grad(set_to_none=True)
                    loss = answer_loss(batch)
                    loss.backward()
                    optimizer.step()
            opt_s = time.perf_counter() - start
            with torch.no_grad():
                final = float(answer_loss(batch))
                for p, w in zip(params, pristine, strict=True):
                    p.copy_(w)
                first = float(answer_loss(batch))
            if i:
                fb.append(fb_s)
                opt.append(opt_s)
                before.append(first)
                after.append(final)
    finally:
        with torch.no_grad():
            for p, w in zip(params, pristine, strict=True):
                p.requires_grad_(False)
                p.copy_(w)
                p.grad = None
    fb_s, opt_s = float(np.median(fb)), float(np.median(opt))
    return {
        "editor": f"ft-l ({iterations} Adam steps, lr {lr:g})",
        "candidates": len(params),
        "fwd_bwd_s": fb_s,
        "update_s": opt_s,
        "edit_over_fwd_bwd": opt_s / fb_s,  # the optimization is the whole edit: no capture pass
        "loss_before": float(np.mean(before)),
        "loss_after": float(np.mean(after)),
    }


def cost_growth(model: str, dataset: str, editor: str, edits: int, window: int = 50, seed: int = 0) -> dict:
    """Median step seconds over edits 5..5+window and over edits N..N+window, interleaved; ratio."""
    from edit_gym.env import LifelongEditEnv

    def make() -> LifelongEditEnv:
        return LifelongEditEnv(
            model=model,
            dataset=dataset,
            known_only=False,
            num_edits=edits + window,
            editor=editor,
            final_eval=False,
        )

    early, late = make(), make()
    action = _all_candidates(early.num_candidates)
    faults = 0

    def timed(env: LifelongEditEnv) -> float:
        nonlocal faults
        start = time.perf_counter()
        _, _, _, _, info = env.step(action)
        faults += bool(info["fault"])
        return time.perf_counter() - start

    early.reset(seed=seed)
    late.reset(seed=seed)
    for _ in range(edits):  # untimed: bring the late env to edit N
        timed(late)
    for _ in range(5):
        timed(early)
    early_times, late_times = [], []
    for _ in range(window):
        early_times.append(timed(early))
        late_times.append(timed(late))
    e, lt = float(np.median(early_times)), float(np.median(late_times))
    return {"editor": editor, "edits": edits, "early_s": e, "late_s": lt, "ratio": lt / e, "faults": faults}


def vector_memory(env_id: str, num_envs: int, steps: int = 3, seed: int = 0) -> dict:
    """Peak RSS (MiB) of this process after building a SyncVectorEnv of ``num_envs`` and stepping it.

    Call in a fresh process per ``num_envs`` (``edit-gym bench`` does), so the peak is this env's.
    """
    import gymnasium as gym

    import edit_gym  # noqa: F401  registers the ids

    envs = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="sync", final_eval=False, num_edits=steps + 1
    )
    n = envs.single_action_space["mask"].n if isinstance(envs.single_action_space, gym.spaces.Dict) else None
    envs.reset(seed=seed)
    action = {"mask": np.ones((num_envs, n), np.int8), "coef": np.zeros((num_envs, n), np.float32)}
    for _ in range(steps):
        envs.step(action)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    envs.close()
    return {"id": env_id, "num_envs": num_envs, "peak_rss_mib": rss}
