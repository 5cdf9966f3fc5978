"""How far GRPO's rollouts are from what the studio plays: the sampler gap (issue 23, item 3).

TRL's GRPO loss scores every completion token with the policy's own log-probability at the rollout
temperature, log π_T(token) = log_softmax(logits / T). Rollouts drawn from that same π_T are on-policy.
The studio samples differently: REMI grammar masks (what cannot legally come next is never drawn), the
model card's per-family factors (Pitch × 0.8) and top-p. Call that distribution q. This benchmark
measures, on GRPO's own procedural prompts with the same model:

1. **Rollouts from π_T (what GRPO does):** how many completions contain a token the studio's grammar
   would have masked (those are outputs the musician can never hear), and the π_T mass on masked tokens.
2. **Rollouts from q (the studio's sampler):** the exact per-position KL(q ‖ π_T) along q's own
   rollouts, and the log-ratio log q − log π_T of the drawn tokens (per token, and summed per
   completion: what a sequence-level importance weight would have to undo).

    uv run python benchmarks/bench_rollout_gap.py                      # shipped model, 64 rollouts each
    uv run python benchmarks/bench_rollout_gap.py --rollouts 16 --tokens 64 --model DIR   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def teacher_forced_logits(model, prompt: list[int], completion: list[int]):
    """Logits [len(completion), V] that predicted each completion token."""
    import torch

    ids = torch.tensor([prompt + completion])
    with torch.inference_mode():
        logits = model(ids).logits[0].float()
    return logits[len(prompt) - 1:len(prompt) - 1 + len(completion)]


def studio_distribution(logits, masks: np.ndarray, temperature: float, top_p: float, family_factors):
    """q at each position: exactly what `engine.sampling.sample_rows` draws from, renormalised."""
    from engine.sampling import SampleGroup, sampling_distribution

    _, probs = sampling_distribution(logits, [SampleGroup(0, logits.shape[0], temperature, top_p, None, masks,
                                                          0, family_factors)])
    return probs / probs.sum(dim=-1, keepdim=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "resources/models/default"))
    ap.add_argument("--rollouts", type=int, default=64, help="completions per sampler")
    ap.add_argument("--tokens", type=int, default=256, help="completion budget (GRPO's max_completion_tokens)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the report as JSON here")
    args = ap.parse_args(argv)

    import torch

    from engine.api import GenerationSettings
    from engine.policy import Policy
    from engine.sampling import GeneratedRow, LocalSampler, RowGroup, RowRules
    from training.rollouts import StudioSampler

    def grammar_masks(tok, prompt, completion):
        """What the studio's grammar allowed before each completion token (the trainer's own replay)."""
        ids = torch.tensor([prompt + completion])
        return StudioSampler(tok.grammar, ()).masks(ids, torch.ones_like(ids), len(completion), tok.vocab_size)[0]

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    policy = Policy.load(args.model, device="cpu")
    tok, model = policy.tokenizer, policy.model
    model.float().eval()
    studio = GenerationSettings()  # the studio's defaults: the model card's sampling, grammar on
    factors = dict(studio.temperature_factors)
    family_factors = tuple((tuple(int(i) for i in tok.kind_ids.get(f, ())), float(x))
                           for f, x in sorted(factors.items()) if x != 1.0)
    rng = random.Random(args.seed)
    prompts = [tok.procedural_prompt(rng) for _ in range(args.rollouts)]

    def rollouts(studio_like: bool, seed: int) -> list[list[int]]:
        rows = []
        for p in prompts:
            grammar = None
            if studio_like:
                grammar = tok.grammar()
                grammar.observe_many(p)
            rows.append(GeneratedRow(p, grammar, opened_bars=1))
        rules = RowRules(temperature=args.temperature, top_p=studio.top_p if studio_like else 1.0,
                         family_factors=family_factors if studio_like else (), max_new_tokens=args.tokens,
                         stop_ids=(tok.eos_id,), keep_stop=True)
        gen = torch.Generator().manual_seed(seed)
        group = RowGroup(rows, rules, gen)
        for _ in LocalSampler().sample(model, group, pad_id=tok.pad_id, bar_id=tok.bar_id,
                                       context=int(model.config.max_position_embeddings)):
            pass
        return [r.history[len(p):] for r, p in zip(group.rows, prompts)]

    # 1. GRPO's rollouts (π_T): what the grammar would have refused.
    illegal_tokens, illegal_rows, masked_mass, n_tokens = 0, 0, [], 0
    for p, c in zip(prompts, rollouts(False, args.seed)):
        logits = teacher_forced_logits(model, p, c)
        masks = grammar_masks(tok, p, c)
        pi = torch.softmax(logits / args.temperature, dim=-1)
        masked_mass += (pi * torch.from_numpy(~masks)).sum(dim=-1).tolist()
        bad = int((~masks[np.arange(len(c)), c]).sum())
        illegal_tokens += bad
        illegal_rows += bad > 0
        n_tokens += len(c)

    # 2. The studio's rollouts (q): how far q is from π_T where q goes.
    kl, log_ratio, seq_log_ratio, q_tokens = [], [], [], 0
    for p, c in zip(prompts, rollouts(True, args.seed + 1)):
        logits = teacher_forced_logits(model, p, c)
        q = studio_distribution(logits, grammar_masks(tok, p, c), args.temperature, studio.top_p, family_factors)
        log_pi = torch.log_softmax(logits / args.temperature, dim=-1)
        log_q = torch.log(q.clamp_min(1e-30))
        kl += (q * (log_q - log_pi)).where(q > 0, torch.zeros_like(q)).sum(dim=-1).tolist()
        drawn = torch.tensor(c)
        lr = (log_q[torch.arange(len(c)), drawn] - log_pi[torch.arange(len(c)), drawn]).tolist()
        log_ratio += lr
        seq_log_ratio.append(sum(lr))
        q_tokens += len(c)

    report = {
        "model": args.model, "rollouts": args.rollouts, "tokens": args.tokens, "temperature": args.temperature,
        "studio_sampler": {"grammar": True, "top_p": studio.top_p, "temperature_factors": factors},
        "grpo_rollouts": {
            "tokens": n_tokens,
            "completions_with_a_masked_token": illegal_rows / len(prompts),
            "masked_tokens_per_1000": 1000 * illegal_tokens / max(1, n_tokens),
            "mean_pi_mass_on_masked_tokens": float(np.mean(masked_mass)) if masked_mass else None,
        },
        "studio_rollouts": {
            "tokens": q_tokens,
            "kl_q_pi_nats_per_token": float(np.mean(kl)),
            "kl_q_pi_p95": float(np.percentile(kl, 95)),
            "log_q_over_pi_drawn_mean": float(np.mean(log_ratio)),
            "sequence_log_ratio_median": float(np.median(seq_log_ratio)),
            "sequence_log_ratio_p90": float(np.percentile(seq_log_ratio, 90)),
        },
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
