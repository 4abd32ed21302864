"""Scoring forward: the output head on every position vs on the answer rows only, in one run.

Teacher-forced scores need the logits at the answer positions only. ``answer_logprobs`` runs the
head on those rows; this prints its time as a ratio to the plain full forward (``model(...).logits``
then the same rows), interleaved on the same batch, and the largest difference of the log-probs.

    python benchmarks/scoring_head.py --model smollm2-135m --batch 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch

import edit_gym  # noqa: F401  registers the ids
from edit_gym.editing.scores import answer_logprobs

ENV_IDS = {"smollm2-135m": "LifelongEdit-v0", "tiny": "LifelongEdit-Tiny-v0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(ENV_IDS))
    parser.add_argument("--dataset", default="facts")
    parser.add_argument("--batch", type=int, default=64, help="neighbourhood prompts in the batch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = gym.make(ENV_IDS[args.model], dataset=args.dataset, num_edits=20, final_eval=False).unwrapped
    env.reset(seed=0)
    pairs = [(p.prompt, p.answer) for r in env.stream for p in r.neighbourhood][: args.batch]
    batch = env.encoder.encode(pairs, device=env.device)

    @torch.no_grad()
    def full() -> torch.Tensor:
        logits = env.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return torch.log_softmax(logits[batch.answer_mask].float(), -1)

    def rows() -> torch.Tensor:
        return answer_logprobs(env.model, batch)

    diff = float((full() - rows()).abs().max())
    t_full, t_rows = [], []
    for _ in range(args.repeats):
        for fn, times in ((full, t_full), (rows, t_rows)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    a, b = statistics.median(t_full), statistics.median(t_rows)
    print(f"model={args.model} batch={tuple(batch.input_ids.shape)} torch threads={torch.get_num_threads()}")
    print(f"full forward {a:.4f} s   answer rows {b:.4f} s   ratio {b / a:.2f}   max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
