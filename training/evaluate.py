"""`smart eval`: the SMART paper's analyses (§4–5) for any set of models.

    smart eval --model base=resources/models/default --model smart=runs/smart/final \\
               --prompts procedural --n 1000 --out reports/smart

For every model, one completion per prompt (the same prompts for all models, paper §4.2), then:

* MAA ratings of the first 10 s of each render, four axes (paper Fig. 3) — when MAA weights are
  available (`--maa PATH` or the cached default); otherwise skipped with a note. `--maa-random`
  uses a random-weight stand-in for plumbing tests; the report says so and shows no rating plot title
  without that warning.
* Histograms of the eight MIDI features (Fig. 4): number of notes, polyphony rate, empty-beat rate,
  pitch distribution, pitch range, scale consistency, velocity distribution, velocity range.
* The average piano roll of the first 16 beats (Fig. 6) and diversity measures
  (`engine.features.diversity`: pairwise Jaccard distance, roll entropy, unique fraction).

Writes OUT/report.json, OUT/report.md, PNG figures, and OUT/samples/NAME/*.mid (a few outputs each).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.cliutil import HelpFormatter, examples
from engine.errors import UserError
from engine.music import Clip, atomic_write_text

SCALAR_FEATURES = ("n_notes", "polyphony_rate", "empty_beat_rate", "pitch_range", "scale_consistency", "velocity_range")
FEATURE_TITLES = {
    "n_notes": "Number of notes", "polyphony_rate": "Polyphony rate", "empty_beat_rate": "Empty-beat rate",
    "pitch_range": "Pitch range", "scale_consistency": "Scale consistency", "velocity_range": "Velocity range",
    "pitch": "Pitch distribution", "velocity": "Velocity distribution",
}
AXIS_TITLES = {"CE": "Content Enjoyment", "CU": "Content Usefulness", "PC": "Production Complexity",
               "PQ": "Production Quality"}


@dataclass
class EvalConfig:
    models: list[tuple[str, str]]  # (name, directory)
    out_dir: str
    prompts: str = "procedural"
    n: int = 1000
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 64
    seconds: float = 10.0
    sample_rate: int = 16000
    soundfont: str | None = None
    maa: str | None = None
    maa_random: bool = False
    no_maa: bool = False
    feature_window: float | None = None  # seconds of each output the MIDI features look at (None: all)
    samples: int = 8
    render_processes: int | None = None
    device: str = "auto"


def generate_outputs(model_dir: str, prompts: Sequence[Sequence[int]], config: EvalConfig,
                     device: str) -> tuple[list[Clip], dict]:
    """One sampled completion per prompt, decoded as the reward sees it (training.rewards.decode_rollout),
    and how many duplicated notes the model wrote (`duplicate_stats`)."""
    import torch
    from engine.policy import Policy, PolicyLoadError
    from training.rollouts import fast_generate
    from training.rewards import decode_rollout

    try:
        policy = Policy.load(model_dir, device=device)
    except PolicyLoadError as exc:
        raise UserError(str(exc)) from None
    tok = policy.tokenizer
    ctx = policy.context_length
    max_new = min(config.max_tokens, ctx - max(len(p) for p in prompts) - 1)
    if max_new < 1:
        raise UserError(f"prompts are too long for the context of {model_dir}")
    gen = torch.Generator(device=device).manual_seed(config.seed)
    clips: list[Clip] = []
    counts: list[tuple[int, int]] = []
    for start in range(0, len(prompts), config.batch_size):
        chunk = [list(p) for p in prompts[start:start + config.batch_size]]
        comps = fast_generate(policy.model, chunk, max_new_tokens=max_new, temperature=config.temperature,
                              top_p=config.top_p, top_k=0, eos_ids=[tok.eos_id], pad_id=tok.pad_id, generator=gen)
        comps = [[t for t in c if t != tok.pad_id] for c in comps]
        clips += [decode_rollout(tok, p, c) for p, c in zip(chunk, comps)]
        counts += [completion_note_counts(tok, p, c) for p, c in zip(chunk, comps)]
    return clips, duplicate_stats(counts)


def completion_note_counts(tok, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> tuple[int, int]:
    """(notes the completion wrote, how many of them repeat an onset and pitch already written), as
    counted by the one decoder that drops such duplicates (`engine.tokenizer.RemiDecoder`)."""
    dec = tok.decoder()
    dec.feed_many(prompt_ids)
    notes, duplicates = len(dec.notes), dec.duplicates
    dec.feed_many(completion_ids)
    new_duplicates = dec.duplicates - duplicates
    return len(dec.notes) - notes + new_duplicates, new_duplicates


def duplicate_stats(counts: Sequence[tuple[int, int]]) -> dict:
    """rate: duplicated / written notes over all outputs; outputs_with_duplicates: fraction of outputs."""
    written = sum(w for w, _ in counts)
    duplicates = sum(d for _, d in counts)
    return {"rate": duplicates / written if written else 0.0, "notes_written": written,
            "duplicate_notes": duplicates,
            "outputs_with_duplicates": sum(d > 0 for _, d in counts) / len(counts) if counts else 0.0}


def _load_scorer(config: EvalConfig, device: str):
    """(scorer or None, note)."""
    if config.no_maa:
        return None, "MAA scoring disabled (--no-maa)"
    from engine import scorer as scorer_mod

    if config.maa_random:
        model = scorer_mod.build_maa_model(small=True, seed=config.seed)
        return (scorer_mod.MAAScorer.from_model(model, device=device, is_random=True),
                "MAA scores come from a RANDOM-WEIGHT model (--maa-random): plumbing only, not aesthetic ratings")
    try:
        return scorer_mod.MAAScorer.load(checkpoint=config.maa, device=device, allow_download=False), None
    except scorer_mod.MAAUnavailable as exc:
        return None, f"MAA ratings skipped: weights unavailable ({str(exc).splitlines()[0]})"


def _summary(values: Sequence[float]) -> dict:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"mean": None, "std": None, "median": None, "min": None, "max": None}
    return {"mean": float(a.mean()), "std": float(a.std()), "median": float(np.median(a)), "min": float(a.min()),
            "max": float(a.max())}


def analyse(clips: Sequence[Clip], window: float | None) -> dict:
    from engine.features import average_piano_roll, diversity, midi_features, window_notes

    feats = [midi_features(c, window_seconds=window) for c in clips]
    pitch_counts = np.zeros(128, dtype=np.int64)
    velocity_counts = np.zeros(128, dtype=np.int64)
    for c in clips:
        for n in (window_notes(c, window) if window else c.notes):
            pitch_counts[n.pitch] += 1
            velocity_counts[min(max(n.velocity, 0), 127)] += 1
    return {
        "features": {k: [f[k] for f in feats] for k in SCALAR_FEATURES},
        "pitch_counts": pitch_counts.tolist(),
        "velocity_counts": velocity_counts.tolist(),
        "average_roll": average_piano_roll(clips, steps_per_beat=4, n_beats=16),
        "diversity": diversity(clips, n_beats=16),
        "silent_fraction": float(np.mean([f["n_notes"] == 0 for f in feats])) if feats else 0.0,
    }


# ---------------------------------------------------------------------------- plots
def _colors(n: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_maa(results: dict, path: Path, note: str | None) -> None:
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, axis in zip(axes, AXIS_TITLES):
        data = [results[n]["maa"][axis] for n in names]
        lo = min(min(d) for d in data if d)
        hi = max(max(d) for d in data if d)
        bins = np.linspace(lo, hi + 1e-6, 30)
        for name, d, color in zip(names, data, _colors(len(names))):
            ax.hist(d, bins=bins, alpha=0.5, color=color, label=f"{name} (μ={np.mean(d):.2f})")
        ax.set_title(AXIS_TITLES[axis])
        ax.legend(fontsize=7)
    fig.suptitle("MAA ratings of the first 10 s" + (f"\n{note}" if note else ""), fontsize=9,
                 color="red" if note else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_features(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    names = list(results)
    colors = _colors(len(names))
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    order = ["n_notes", "polyphony_rate", "empty_beat_rate", "pitch", "pitch_range", "scale_consistency",
             "velocity", "velocity_range"]
    for ax, key in zip(axes.flat, order):
        if key in ("pitch", "velocity"):
            lo, hi = (21, 109) if key == "pitch" else (0, 128)
            x = np.arange(lo, hi)
            for name, color in zip(names, colors):
                counts = np.asarray(results[name][f"{key}_counts"])[lo:hi].astype(float)
                total = counts.sum()
                ax.step(x, counts / total if total else counts, where="mid", color=color, label=name)
            ax.set_xlabel("MIDI pitch" if key == "pitch" else "velocity")
            ax.set_ylabel("fraction of notes")
        else:
            data = [results[n]["features"][key] for n in names]
            flat = [v for d in data for v in d]
            lo, hi = (min(flat), max(flat)) if flat else (0, 1)
            if key in ("n_notes", "pitch_range", "velocity_range"):
                bins = np.arange(lo, hi + 2) - 0.5 if hi - lo <= 60 else np.linspace(lo, hi + 1, 40)
            else:
                bins = np.linspace(lo, hi + 1e-6, 30) if hi > lo else np.linspace(lo - 0.05, hi + 0.05, 3)
            for name, d, color in zip(names, data, colors):
                ax.hist(d, bins=bins, alpha=0.5, color=color, label=name)
        ax.set_title(FEATURE_TITLES[key])
        ax.legend(fontsize=7)
    fig.suptitle("MIDI features of the outputs (paper Fig. 4)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rolls(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        roll = np.asarray(results[name]["average_roll"])  # [steps, 128]
        ax.imshow(roll[:, 21:109].T, origin="lower", aspect="auto", cmap="magma", vmin=0,
                  extent=(0, roll.shape[0] / 4, 21, 109))
        ax.set_title(f"{name} (n={results[name]['n']})")
        ax.set_xlabel("beat")
        ax.set_ylabel("MIDI pitch")
    fig.suptitle("Average piano roll of the first 16 beats (paper Fig. 6)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_diversity(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    names = list(results)
    keys = ["pairwise_distance", "roll_entropy", "unique_fraction"]
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(names), 3.6))
    width = 0.8 / len(names)
    for i, (name, color) in enumerate(zip(names, _colors(len(names)))):
        vals = [results[name]["diversity"][k] for k in keys]
        ax.bar(np.arange(len(keys)) + i * width, vals, width, color=color, label=name)
    ax.set_xticks(np.arange(len(keys)) + width * (len(names) - 1) / 2, keys)
    ax.set_ylim(0, 1.05)
    ax.set_title("Diversity of the outputs (first 16 beats)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- the evaluation
def run_eval(config: EvalConfig, log=print) -> dict:
    import torch
    import matplotlib

    matplotlib.use("Agg")
    from engine.tokenizer import RemiTokenizer
    from training.prompts import build_prompt_source
    from training.rewards import RolloutAnalyzer

    if not config.models:
        raise UserError("no models given (--model NAME=DIR)")
    names = [n for n, _ in config.models]
    if len(set(names)) != len(names):
        raise UserError("model names must be unique")
    if config.n < 1:
        raise UserError("--n must be at least 1")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = RemiTokenizer.load(config.models[0][1])
    except (OSError, ValueError) as exc:
        raise UserError(f"{config.models[0][1]}: {exc}") from None
    source = build_prompt_source(config.prompts, tokenizer)
    prompts = source.sample(config.n, random.Random(config.seed))
    scorer, maa_note = _load_scorer(config, device)
    analyzer = RolloutAnalyzer(tokenizer, seconds=config.seconds, sample_rate=config.sample_rate,
                               soundfont=config.soundfont, scorer=scorer, processes=config.render_processes)
    results: dict[str, dict] = {}
    try:
        for name, directory in config.models:
            t0 = time.perf_counter()
            clips, duplicates = generate_outputs(directory, prompts, config, device)
            gen_s = time.perf_counter() - t0
            res = analyse(clips, config.feature_window)
            res.update({"model": directory, "n": len(clips), "generate_s": round(gen_s, 2), "duplicates": duplicates})
            if scorer is not None:
                t1 = time.perf_counter()
                scores = analyzer.score(analyzer.render(clips))
                res["maa"] = {axis: [s[axis] for s in scores] for axis in AXIS_TITLES}
                res["maa_s"] = round(time.perf_counter() - t1, 2)
            sample_dir = out / "samples" / name
            sample_dir.mkdir(parents=True, exist_ok=True)
            for i, clip in enumerate(clips[: config.samples]):
                clip.save_midi(sample_dir / f"{i:03d}.mid")
            results[name] = res
            log(f"smart eval: {name}: {len(clips)} outputs, mean notes {np.mean(res['features']['n_notes']):.1f}, "
                f"duplicates {100 * duplicates['rate']:.1f} %, diversity {res['diversity']['pairwise_distance']:.3f}"
                + (f", CE {np.mean(res['maa']['CE']):.2f}" if "maa" in res else ""))
    finally:
        analyzer.close()

    figures = {}
    if scorer is not None:
        plot_maa(results, out / "maa_distributions.png", maa_note)
        figures["maa"] = "maa_distributions.png"
    plot_features(results, out / "midi_features.png")
    plot_rolls(results, out / "piano_rolls.png")
    plot_diversity(results, out / "diversity.png")
    figures.update({"features": "midi_features.png", "piano_rolls": "piano_rolls.png", "diversity": "diversity.png"})

    report = {
        "config": {**config.__dict__, "models": [list(m) for m in config.models]},
        "prompt_source": source.describe(),
        "maa": {"available": scorer is not None, "random_weights": bool(getattr(scorer, "is_random", False)),
                "note": maa_note},
        "figures": figures,
        "models": {},
    }
    for name, res in results.items():
        entry = {
            "model": res["model"], "n": res["n"], "generate_s": res["generate_s"],
            "features": {k: _summary(v) for k, v in res["features"].items()},
            "diversity": res["diversity"], "silent_fraction": res["silent_fraction"], "duplicates": res["duplicates"],
            "pitch_counts": res["pitch_counts"], "velocity_counts": res["velocity_counts"],
        }
        if "maa" in res:
            entry["maa"] = {axis: _summary(v) for axis, v in res["maa"].items()}
        report["models"][name] = entry
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out / "report.md", _markdown(report))
    return report


def _markdown(report: dict) -> str:
    cfg = report["config"]
    names = list(report["models"])
    lines = [f"# SMART evaluation — {len(names)} model(s), {cfg['n']} outputs each", "",
             f"Prompts `{cfg['prompts']}`, ≤ {cfg['max_tokens']} tokens, temperature {cfg['temperature']}, "
             f"seed {cfg['seed']}.", ""]
    if report["maa"]["note"]:
        lines += [f"**Note:** {report['maa']['note']}", ""]
    header = "| | " + " | ".join(names) + " |"
    sep = "|---" * (len(names) + 1) + "|"
    lines += [header, sep]
    if report["maa"]["available"]:
        for axis in AXIS_TITLES:
            lines.append(f"| MAA {axis} (mean ± sd) | " + " | ".join(
                f"{report['models'][n]['maa'][axis]['mean']:.2f} ± {report['models'][n]['maa'][axis]['std']:.2f}"
                for n in names) + " |")
    for key in SCALAR_FEATURES:
        lines.append(f"| {FEATURE_TITLES[key]} (mean) | " + " | ".join(
            _fmt(report["models"][n]["features"][key]["mean"]) for n in names) + " |")
    for key in ("pairwise_distance", "roll_entropy", "unique_fraction"):
        lines.append(f"| diversity: {key} | " + " | ".join(
            f"{report['models'][n]['diversity'][key]:.3f}" for n in names) + " |")
    lines.append("| silent outputs | " + " | ".join(
        f"{100 * report['models'][n]['silent_fraction']:.1f} %" for n in names) + " |")
    lines.append("| duplicated notes written (dropped) | " + " | ".join(
        f"{100 * report['models'][n]['duplicates']['rate']:.1f} %" for n in names) + " |")
    lines += ["", "Figures: " + ", ".join(f"`{f}`" for f in report["figures"].values()), ""]
    return "\n".join(lines)


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3g}"


# ---------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="compare models with the SMART paper's analyses (MAA, MIDI features, "
                                           "piano rolls, diversity)",
                              description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
                              epilog=examples("smart eval --model base=resources/models/default "
                                              "--model smart=runs/smart/final --n 200 --out reports/smart"))
    p.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                   help="a model to evaluate (repeat for several); NAME labels it in the report")
    p.add_argument("--prompts", default="procedural",
                   help="procedural | procedural+note | data:DIR[:split] | MIDI files/folders (comma-separated)")
    p.add_argument("--n", type=int, default=1000, help="outputs per model (paper: 1000)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens per output (as in training)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="random seed (prompts and sampling)")
    p.add_argument("--batch-size", type=int, default=64, help="outputs generated together")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds rendered and rated by MAA")
    p.add_argument("--soundfont", default=None, help="SoundFont for rendering (default: the shipped piano)")
    p.add_argument("--maa", default=None, help="MAA checkpoint (default: the cached weights, if any)")
    p.add_argument("--maa-random", action="store_true", help="random-weight MAA stand-in (plumbing tests only)")
    p.add_argument("--no-maa", action="store_true", help="skip MAA ratings")
    p.add_argument("--feature-window", type=float, default=None,
                   help="compute MIDI features on the first N seconds only (default: whole outputs)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda; auto = cuda when available")
    p.set_defaults(func=run)


def parse_models(specs: Sequence[str]) -> list[tuple[str, str]]:
    models = []
    for spec in specs:
        if "=" in spec:
            name, _, directory = spec.partition("=")
        else:
            directory = spec
            name = Path(spec.rstrip("/")).name or spec
        if not name or not directory:
            raise UserError(f"--model expects NAME=DIR, got {spec!r}")
        models.append((name, directory))
    return models


def run(args) -> int:
    config = EvalConfig(models=parse_models(args.model), out_dir=args.out, prompts=args.prompts, n=args.n,
                        max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
                        batch_size=args.batch_size, seconds=args.seconds, soundfont=args.soundfont, maa=args.maa,
                        maa_random=args.maa_random, no_maa=args.no_maa, feature_window=args.feature_window,
                        device=args.device)
    report = run_eval(config)
    if report["maa"]["note"]:
        print(f"smart eval: {report['maa']['note']}")
    print(f"smart eval: report in {Path(args.out) / 'report.md'}")
    return 0
