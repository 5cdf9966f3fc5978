"""Seconds per SMART GRPO iteration, split into generation / render / score / update.

    uv run python benchmarks/bench_grpo.py                      # CPU: tiny policy + small random MAA
    uv run python benchmarks/bench_grpo.py --model paper --maa full --steps 6   # on CUDA
    uv run python benchmarks/bench_grpo.py --model paper --maa none --steps 2 --cpu-threads 1 --bf16 off auto
                                                      # CPU update: float32 vs the default, in one run

The paper's iteration (8 prompts × 8 completions, ≤ 256 tokens, MAA CE of 10 s, β = 0.04) took
15 s on an RTX 3090. Random weights everywhere: the MAA scores mean nothing; only the time does.
Prints one JSON object per --bf16 setting: per-phase means over the steps after the first (warm-up),
plus the setup; with several settings, the update's speed-up over the first one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.policy import Policy  # noqa: E402
from training.grpo import GRPORunConfig, read_events, run_grpo  # noqa: E402

PHASES = ("time_generate_s", "time_render_s", "time_score_s", "time_reward_s", "time_update_s", "step_s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="tiny | paper (random init) or a Policy directory")
    p.add_argument("--maa", default="small", help="small | full random-weight MAA, or 'none' (notes reward)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-completion-tokens", type=int, default=256)
    p.add_argument("--generation", default="auto", help="fast | hf | auto")
    p.add_argument("--render-processes", type=int, default=None)
    p.add_argument("--cpu-threads", type=int, default=None)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--bf16", nargs="+", choices=("auto", "on", "off"), default=["auto"],
                   help="bf16 autocast setting(s), run one after the other on the same model")
    p.add_argument("--out", default=None, help="keep the run directories here")
    args = p.parse_args(argv)

    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model)
        if not model_dir.is_dir():
            model_dir = Path(tmp) / "model"
            Policy.create(args.model, seed=0).save(model_dir)
        for bf16 in args.bf16:
            out = (Path(args.out) if args.out else Path(tmp)) / f"run-bf16-{bf16}"
            cfg = GRPORunConfig.from_preset(
                "paper", model=str(model_dir), out_dir=str(out), steps=args.steps,
                prompts_per_step=args.prompts_per_step, group=args.group,
                max_completion_tokens=args.max_completion_tokens, beta=args.beta,
                reward="notes" if args.maa == "none" else "maa-ce", maa_random=args.maa != "none",
                maa_random_size=args.maa if args.maa != "none" else "small", save_every=0, tensorboard=False,
                generation=args.generation, render_processes=args.render_processes, cpu_threads=args.cpu_threads,
                bf16=bf16)
            t0, cpu0 = time.perf_counter(), time.process_time()
            result = run_grpo(cfg)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            timed = read_events(result.events)
            timed = timed[1:] or timed
            report = {
                "device": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                else f"cpu ({args.cpu_threads or torch.get_num_threads()} threads)",
                "model": args.model, "maa": args.maa + " (random weights)" if args.maa != "none" else "none",
                "bf16": bf16, "completions_per_step": args.prompts_per_step * args.group,
                "max_completion_tokens": args.max_completion_tokens, "steps_timed": len(timed),
                "mean_completion_tokens": float(np.mean([e["completion_tokens"] for e in timed])),
                **{k: round(float(np.mean([e.get(k) or 0.0 for e in timed])), 3) for k in PHASES},
                "wall_s_including_setup": round(wall, 1),
                "process_cpu_s_including_setup": round(cpu, 1),  # steadier than wall on a shared machine
            }
            print(json.dumps(report, indent=2), flush=True)
            reports.append(report)
    if len(reports) > 1:
        base = reports[0]["time_update_s"]
        print("update speed-up over bf16=" + reports[0]["bf16"] + ": "
              + ", ".join(f"bf16={r['bf16']} {base / r['time_update_s']:.2f}x" for r in reports[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
