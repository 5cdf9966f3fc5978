"""The model card's procedural-prompt check for several per-family temperature settings at one top-p.

    uv run python benchmarks/bench_procedural_factors.py                 # all settings below
    uv run python benchmarks/bench_procedural_factors.py none shipped
    uv run python benchmarks/bench_procedural_factors.py --model DIR --prompts 2 --batch 2 --bars 1 none   # smoke

100 procedural prompts, 4 bars, batches of 25 with seeds 0/25/50/75 (as `training/model_card.py`),
temperature 1.0, top-p 0.95 for every setting, so only the factors differ. Prints one JSON line per
setting: mean notes, silent share and the paper's MIDI features. Results: BENCHMARKS.md, Musicality.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.api import DEFAULT_TEMPERATURE_FACTORS  # noqa: E402
from engine.features import midi_features  # noqa: E402
from engine.policy import GenerationSettings, Policy  # noqa: E402

SETTINGS = {"none": {}, "pitch0.8": {"Pitch": 0.8}, "p0.8_d1.3": {"Pitch": 0.8, "Duration": 1.3},
            "shipped": dict(DEFAULT_TEMPERATURE_FACTORS)}
FEATURES = ("polyphony_rate", "pitch_range", "empty_beat_rate", "scale_consistency", "velocity_range")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("settings", nargs="*", help=f"settings to run: {', '.join(SETTINGS)} (default: all)")
    p.add_argument("--model", default="resources/models/default")
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--batch", type=int, default=25, help="prompts per generation call (seeds 0, batch, 2·batch, …)")
    p.add_argument("--bars", type=int, default=4)
    args = p.parse_args(argv)
    unknown = [name for name in args.settings if name not in SETTINGS]
    if unknown:
        p.error(f"unknown setting(s) {', '.join(unknown)} (choose from {', '.join(SETTINGS)})")
    torch.set_num_threads(1)
    policy = Policy.load(args.model)
    for name in args.settings or list(SETTINGS):
        factors = SETTINGS[name]
        started, clips = time.time(), []
        for seed in range(0, args.prompts, args.batch):
            settings = GenerationSettings(candidates=min(args.batch, args.prompts - seed), seed=seed, bars=args.bars,
                                          top_p=0.95, max_new_tokens=512 * args.bars, temperature_factors=factors)
            clips += [c.clip for c in policy.generate_procedural(settings)[0]]
        notes = np.array([len(c.notes) for c in clips])
        feats = [midi_features(c) for c in clips if c.notes] or [dict.fromkeys(FEATURES, float("nan"))]
        row = {"setting": name, "factors": factors, "notes": round(float(notes.mean()), 1),
               "silent": float((notes == 0).mean()), "seconds": round(time.time() - started)}
        row.update({k: round(float(np.mean([f[k] for f in feats])), 3) for k in FEATURES})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
