"""Choose the sampling defaults for a model on the validation split, by the rule stated in advance.

Every setting continues the same validation passages (`smart eval-continuation`'s benchmark, one
process, same seed); `training.continuation_bench.choose_sampling` keeps the settings whose in-key
share is within 0.01 of the best and that emit no duplicates, and picks the lowest
`sampling_score` (|log2 note density| + |log2 onsets/true onsets| + note-length histogram L1).
The chosen setting is then reported on the test split by `smart eval-continuation`.

    uv run python scripts/choose_sampling.py --model runs/pretrain/export --data runs/data \\
        --setting none --setting Pitch=0.8 --setting Pitch=0.8,Duration=1.6,Velocity=1.2 --out runs/choose
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.api import parse_temperature_factors  # noqa: E402
from engine.music import atomic_write_text  # noqa: E402
from training import continuation_bench as cb  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--data", required=True, metavar="DATA_DIR")
    p.add_argument("--setting", action="append", required=True, metavar="FAMILY=F,...|none",
                   help="per-family temperature factors to try (repeat)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--n", type=int, default=40, help="validation passages")
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--split", default="val")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    systems, truth = {}, None
    for text in args.setting:
        report = cb.run_benchmark([("model", args.model)], args.data, n=args.n, candidates=args.candidates,
                                  temperature=args.temperature, top_p=args.top_p,
                                  temperature_factors=parse_temperature_factors(text), seed=args.seed,
                                  split=args.split, log=lambda *_: None)
        systems[text] = report["systems"]["model"]["all"]
        truth = report["systems"][cb.TRUTH]["all"]
        print(f"{text}: score {cb.sampling_score(systems[text]):.3f}", file=sys.stderr, flush=True)
    chosen, verdicts = cb.choose_sampling(systems)
    rows = ["| factors | in key | abs log2 density | onsets / true | median length (beats) | length hist L1 | "
            "duplicates | score | verdict |", "| --- |" + " --- |" * 8]
    for name, sys_ in [*systems.items(), ("(true continuation)", truth)]:
        rows.append(f"| {name} | {sys_['in_key']['mean']:.3f} | {sys_['abs_log2_density']['mean']:.3f} | "
                    f"{sys_['onset_ratio_pooled']:.2f} | {sys_['median_duration_beats']:.3f} | "
                    f"{sys_['duration_hist_l1_pooled']:.3f} | {sys_['duplicate_rate']:.3f} | "
                    f"{cb.sampling_score(sys_):.3f} | {verdicts.get(name, '')} |")
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "choice.md"), "\n".join(rows) + "\n")
    atomic_write_text(os.path.join(args.out, "choice.json"), json.dumps(
        {"chosen": chosen, "verdicts": verdicts, "systems": systems, "truth": truth, "config": vars(args)}, indent=1))
    print("\n".join(rows))
    print(f"chosen: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
