"""Taste learning and taste tuning against simulated listeners (never a person's judgements).

For every simulated listener — by default the held-out ones (`training.listeners`: motifs that return, a
singable line, in key and on the beat together; tastes that mix several qualities nonlinearly, with pick
noise and lapses, and played no part in choosing the taste model's features or its Laplace prior), or
the feature listeners of `training.taste.LISTENERS` (each prefers one quality, three of them taste
features: flattering by construction):
1. judge `--train-pairs` pairs of 2-bar continuations by the base model (one pair per prompt, 4-bar
   prompts cut from real pieces) into a preference set, as the studio would save them;
2. fit a taste on them (every representation in `--representations`) and report its cross-validated
   agreement and its agreement with the listener on `--test-pairs` unseen pairs (other prompts), with
   a Wilson interval; with `--redraws N`, also the mean and spread over N random draws of the judged
   pairs (which 40 pairs a musician happens to judge moves the figure more than the test noise does);
3. tune the base model toward the taste (`smart taste tune`, DPO; `--tune-draws N`: N tunes, each on its
   own draw of the judged pairs) and compare tuned and base continuations at the same prompts and seeds:
   how often the listener prefers the tuned one, with a 95 % interval from a bootstrap over prompts (the
   seeds of one prompt are not independent comparisons), and guard metrics: in-key share, onsets per
   beat, notes, how many outputs differ from the base model's at the same seed, and held-out NLL on
   the test split of `--nll-data` (a prepared data folder).

    uv run python benchmarks/bench_taste.py                       # shipped model, held-out listeners
    uv run python benchmarks/bench_taste.py --listeners sparse --skip-tune
    uv run python benchmarks/bench_taste.py --test-pairs 300 --representations midi,paper --redraws 30 --skip-tune
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_prompts(folder: Path, n: int, bars: int, seed: int):
    from engine.music import Clip, MidiFileError

    files = sorted(folder.rglob("*.mid"))
    random.Random(seed).shuffle(files)
    prompts = []
    for f in files:
        try:
            clip, _ = Clip.from_midi(f, mode="user")
        except MidiFileError:
            continue
        if clip.num_bars < 8 + bars:
            continue
        p = clip.slice_bars(8, 8 + bars)  # past the intro
        if len(p.notes) >= 8:
            prompts.append(p)
        if len(prompts) == n:
            break
    return prompts


def record_pairs(directory: Path, listener, prompts, samples, rng: random.Random):
    from engine.preferences import PreferenceSet

    prefs = PreferenceSet(directory)
    for prompt, (a, b) in zip(prompts, samples):
        choice = listener.choose(a.clip, b.clip, prompt, rng)
        prefs.record(a_midi=a.clip.to_midi_bytes(), b_midi=b.clip.to_midi_bytes(), prompt_midi=prompt.to_midi_bytes(),
                     choice=choice, a_model={"role": "base"}, b_model={"role": "base"}, source="simulated",
                     extra={"listener": listener.name})
    return prefs


def agreement(listener, scorer, prompts, samples, rng):
    """Agreement of the taste with the listener's noisy picks (and how many it got right), with its
    noiseless preference, and the expected agreement with its picks (the mean of the listener's
    probability of picking the side the taste prefers: the same quantity without the pick noise)."""
    noisy, clean, expected = [], [], []
    for prompt, (a, b) in zip(prompts, samples):
        s, _ = scorer.score_many([a.clip, b.clip], [prompt, prompt])
        says_a = s[0] > s[1]
        p_a = listener.probability(a.clip, b.clip, prompt)
        noisy.append(says_a == (listener.choose(a.clip, b.clip, prompt, rng) == "A"))
        clean.append(says_a == (p_a > 0.5))
        expected.append(p_a if says_a else 1.0 - p_a)
    return float(np.mean(noisy)), float(np.mean(clean)), float(np.mean(expected)), int(np.sum(noisy))


def redrawn_agreement(listener, prompts, samples, n_train: int, draws: int, seed: int, representation="midi"):
    """The fit's variance over which 40 pairs a musician happened to judge: `draws` times, n_train
    pairs drawn from all of them (fresh pick noise) to fit on, the rest to test on. Mean and std over
    the draws of the expected agreement with the listener's picks and of the noiseless agreement."""
    from engine.taste import REPRESENTATIONS, Comparisons, fit_comparisons, midi_vector

    names = REPRESENTATIONS[representation]
    X = np.array([midi_vector(c.clip, p, names) for p, pair in zip(prompts, samples) for c in pair])
    prob = np.array([listener.probability(a.clip, b.clip, p) for p, (a, b) in zip(prompts, samples)])
    n = len(prompts)
    a_idx, b_idx = 2 * np.arange(n), 2 * np.arange(n) + 1
    expected, clean = [], []
    for d in range(draws):
        rng = np.random.default_rng(seed * 1000 + d)
        order = rng.permutation(n)
        train, test = order[:n_train], order[n_train:]
        y = (rng.random(n_train) < prob[train]).astype(float)
        model = fit_comparisons(Comparisons(X, a_idx[train], b_idx[train], y), names, representation)
        s, _ = model.score_vectors(X)
        says_a = s[a_idx[test]] > s[b_idx[test]]
        expected.append(float(np.mean(np.where(says_a, prob[test], 1 - prob[test]))))
        clean.append(float(np.mean(says_a == (prob[test] > 0.5))))
    return {"draws": draws, "expected_agreement": round(float(np.mean(expected)), 3),
            "expected_agreement_std": round(float(np.std(expected)), 3),
            "noiseless": round(float(np.mean(clean)), 3), "noiseless_std": round(float(np.std(clean)), 3),
            "best_possible": round(float(np.mean(np.maximum(prob, 1 - prob))), 3)}


def prompt_clustered_interval(wins: np.ndarray, n_prompts: int, draws: int = 2000, seed: int = 0):
    """95 % bootstrap interval of the win rate, resampling prompts (their seeds move together)."""
    rng = np.random.default_rng(seed)
    per_prompt = wins.reshape(-1, n_prompts)  # [seeds, prompts]
    rates = [per_prompt[:, rng.integers(0, n_prompts, n_prompts)].mean() for _ in range(draws)]
    return [round(float(np.percentile(rates, 2.5)), 3), round(float(np.percentile(rates, 97.5)), 3)]


def guard_metrics(prompts, samples_by_seed, base_by_seed, args, policy) -> dict:
    """What else a tune moved: in-key share (the prompt's key), onsets per beat, notes, distinctness from
    the base model's output at the same prompt and seed, held-out NLL (with --nll-data)."""
    from engine.taste import continuation_span
    from training.listeners import key_scale

    in_key, onsets, notes, differs = [], [], [], []
    for s, samples in enumerate(samples_by_seed):
        for i, (prompt, clip) in enumerate(zip(prompts, samples)):
            span, beats = continuation_span(clip, prompt)
            scale = key_scale(prompt.last_bars(4))
            if span.notes:
                in_key.append(np.mean([scale[n.pitch % 12] for n in span.notes]))
            onsets.append(len({n.start for n in span.notes}) / max(beats, 1.0))
            notes.append(len(span.notes))
            if base_by_seed is not None:
                key = lambda n: (n.start, n.pitch, n.duration, n.velocity)  # noqa: E731
                differs.append(sorted(map(key, clip.notes)) != sorted(map(key, base_by_seed[s][i].notes)))
    out = {"in_key": round(float(np.mean(in_key)), 3), "onsets_per_beat": round(float(np.mean(onsets)), 3),
           "notes": round(float(np.mean(notes)), 2)}
    if base_by_seed is not None:
        out["differs_from_base"] = round(float(np.mean(differs)), 3)
    if args.nll_data:
        from training.nll import evaluate

        rep = evaluate(None, [args.nll_data], split="test", max_tokens=args.nll_tokens, policy=policy)
        out["test_nll"] = round(float(rep["nll_per_token"]), 4)
    return out


def run_tune(args, listener, tok, eval_p, eval_base, pairs_dir, taste_dir, out, rng, base_guard) -> dict:
    from engine.features import diversity
    from engine.policy import Policy
    from training.taste import TuneConfig, sample_continuations, tune

    config = TuneConfig(model=args.model, taste=str(taste_dir), pairs=[str(pairs_dir)], out_dir=str(out),
                        steps=args.steps, beta=args.beta, seed=args.seed, cpu_threads=args.threads)
    if args.lr is not None:
        config.lr = args.lr
    if args.synthetic_prompts is not None:
        config.synthetic_prompts = args.synthetic_prompts
    t1 = time.perf_counter()
    if args.reuse_tunes and (out / "taste_tune.json").is_file():  # a kept work folder's finished tune
        card = json.loads((out / "taste_tune.json").read_text())
        tune_s = float(card.get("elapsed_s", 0.0))
    else:
        card = tune(config)
        tune_s = time.perf_counter() - t1
    tuned = Policy.load(out)
    wins, probs, tuned_all = [], [], []
    for s in range(args.eval_seeds):
        t_samples = sample_continuations(tuned.model, tok, eval_p, 1, bars=2, seed=1000 + s)
        for prompt, bs, ts in zip(eval_p, eval_base[s], t_samples):
            wins.append(listener.choose(ts[0].clip, bs[0].clip, prompt, rng) == "A")
            probs.append(listener.probability(ts[0].clip, bs[0].clip, prompt))
        tuned_all.append([x[0].clip for x in t_samples])
    distinct = [diversity([tuned_all[s][i] for s in range(args.eval_seeds)])["unique_fraction"]
                for i in range(len(eval_p))]
    guard = guard_metrics(eval_p, tuned_all, [[x[0].clip for x in e] for e in eval_base], args, tuned)
    wins_a, probs_a = np.array(wins, dtype=float), np.array(probs)
    row = {"tune_s": round(tune_s, 1), "tune_cpu_s": card["cpu_s"], "win_rate": round(float(wins_a.mean()), 3),
           "win_rate_interval_by_prompt": prompt_clustered_interval(wins_a, len(eval_p)),
           "mean_preference": round(float(probs_a.mean()), 3),
           "mean_preference_interval_by_prompt": prompt_clustered_interval(probs_a, len(eval_p)),
           "comparisons": len(wins), "prompts": len(eval_p), "distinct": round(float(np.mean(distinct)), 3),
           "guard": guard, "base_guard": base_guard, "drift_guard": card.get("drift"),
           **{k: card[k] for k in ("musician_pairs", "synthetic_pairs", "steps", "generate_s", "train_s")}}
    print(f"[{listener.name}] tune {tune_s:.0f} s wall ({card['steps']} steps, {card['musician_pairs']} + "
          f"{card['synthetic_pairs']} pairs) · tuned preferred in {row['win_rate']:.3f} "
          f"{row['win_rate_interval_by_prompt']} of {len(wins)} (mean P {row['mean_preference']:.3f} "
          f"{row['mean_preference_interval_by_prompt']}) · distinct {row['distinct']:.3f} · guard {json.dumps(guard)}",
          flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "resources" / "models" / "default"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "pop909"))
    ap.add_argument("--listeners", default="motif-return,singer,grounded-groove",
                    help="held-out: motif-return, singer, grounded-groove; feature listeners: high-register, "
                         "sparse, long-notes, rising-line")
    ap.add_argument("--representations", default="midi,paper,hidden,midi+hidden")
    ap.add_argument("--train-pairs", type=int, default=40)
    ap.add_argument("--test-pairs", type=int, default=300)  # ±0.025 standard error on an agreement
    ap.add_argument("--eval-prompts", type=int, default=16)
    ap.add_argument("--eval-seeds", type=int, default=4)
    ap.add_argument("--redraws", type=int, default=0,
                    help="also refit the midi taste on this many random draws of --train-pairs pairs (fit variance)")
    ap.add_argument("--skip-tune", action="store_true")
    ap.add_argument("--tune-draws", type=int, default=1,
                    help="tunes per listener, each on a fresh draw of --train-pairs judged pairs")
    ap.add_argument("--reuse-tunes", action="store_true",
                    help="with --keep: evaluate a tune already finished in the work folder instead of tuning again")
    ap.add_argument("--nll-data", default=None, help="prepared data folder: held-out NLL of base and tuned models")
    ap.add_argument("--nll-tokens", type=int, default=60_000, help="test tokens scored for the NLL guard")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--beta", type=float, default=None)
    ap.add_argument("--synthetic-prompts", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", help="keep the work folder here")
    args = ap.parse_args()

    import torch

    from engine.policy import Policy
    from engine.preferences import read_pairs
    from engine.taste import wilson_interval
    from training.listeners import HELD_OUT_LISTENERS
    from training.taste import (LISTENERS, TasteScorer, fit_taste_any, sample_continuations,
                                sample_from_ids)

    all_listeners = {**LISTENERS, **HELD_OUT_LISTENERS}
    unknown = [n for n in args.listeners.split(",") if n not in all_listeners]
    if unknown:
        print(f"unknown listener(s) {', '.join(unknown)}: choose from {', '.join(all_listeners)}", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_taste_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = Policy.load(args.model)
    tok = base.tokenizer
    n_prompts = args.train_pairs + args.test_pairs + args.eval_prompts
    prompts = load_prompts(Path(args.data), n_prompts, 4, args.seed)
    if len(prompts) < n_prompts:
        print(f"only {len(prompts)} prompts in {args.data}", file=sys.stderr)
        return 2
    train_p = prompts[:args.train_pairs]
    test_p = prompts[args.train_pairs:args.train_pairs + args.test_pairs]
    eval_p = prompts[args.train_pairs + args.test_pairs:]
    cache = work / "base_samples.json"  # generating is the slow part: a kept work folder reuses it
    if cache.exists():
        stored = json.loads(cache.read_text())
        pairs = [[sample_from_ids(tok, *x) for x in group] for group in stored["pairs"]]
        eval_base = [[[sample_from_ids(tok, *x) for x in group] for group in seed] for seed in stored["eval"]]
    else:
        pairs = sample_continuations(base.model, tok, train_p + test_p, 2, bars=2, seed=args.seed)
        eval_base = [sample_continuations(base.model, tok, eval_p, 1, bars=2, seed=1000 + s)
                     for s in range(args.eval_seeds)]
        ids = lambda groups: [[(x.prompt_ids, x.completion_ids) for x in g] for g in groups]  # noqa: E731
        cache.write_text(json.dumps({"pairs": ids(pairs), "eval": [ids(e) for e in eval_base]}))
    train_s, test_s = pairs[:args.train_pairs], pairs[args.train_pairs:]
    print(f"{2 * len(pairs)} base continuations ready after {time.perf_counter() - t0:.0f} s "
          f"(model {args.model}, load average {_load():.1f})", flush=True)

    base_guard = guard_metrics(eval_p, [[x[0].clip for x in e] for e in eval_base], None, args, base)
    print(f"base model guard metrics: {json.dumps(base_guard)}", flush=True)
    results = {}
    for name in args.listeners.split(","):
        listener = all_listeners[name]
        rng = random.Random(zlib.crc32(name.encode()) + args.seed)
        pref_dir = work / name / "preferences"
        shutil.rmtree(pref_dir, ignore_errors=True)
        record_pairs(pref_dir, listener, train_p, train_s, rng)
        ceiling = np.mean([(listener.choose(a.clip, b.clip, p, rng) == "A") == (listener.probability(a.clip, b.clip, p) > 0.5)
                           for p, (a, b) in zip(test_p, test_s)])
        print(f"[{name}] the listener agrees with its own noiseless preference on {ceiling:.3f} of the unseen pairs")
        pset = read_pairs([pref_dir])
        row: dict = {"pairs": len(pset), "listener_self_agreement": round(float(ceiling), 3), "fit": {},
                     "held_out": name in HELD_OUT_LISTENERS}
        for rep in args.representations.split(","):
            t1 = time.perf_counter()
            model, _ = fit_taste_any(pset, rep, args.model)
            fit_s = time.perf_counter() - t1
            model.save(work / name / f"taste-{rep}")
            scorer = TasteScorer(model)
            noisy, clean, expected, right = agreement(listener, scorer, test_p, test_s, random.Random(rng.random()))
            lo, hi = wilson_interval(right, len(test_p))
            r = model.report
            row["fit"][rep] = {"cv_accuracy": r["cv"]["accuracy"], "cv_interval": r["cv"]["accuracy_interval"],
                               "unseen_agreement": round(noisy, 3), "unseen_interval": [round(lo, 3), round(hi, 3)],
                               "unseen_expected_agreement": round(expected, 3),
                               "unseen_agreement_noiseless": round(clean, 3), "active_features": r.get("active_features"),
                               "lambda": r.get("lambda"), "fit_s": round(fit_s, 2)}
            print(f"[{name}] {rep:12s} cv {r['cv']['accuracy']:.3f} {r['cv']['accuracy_interval']} · unseen "
                  f"{noisy:.3f} [{lo:.3f}, {hi:.3f}] (expected {expected:.3f}, noiseless {clean:.3f}) · "
                  f"{r.get('active_features')} features, λ {r.get('lambda')} · fit {fit_s:.1f} s", flush=True)
            if rep == "midi" and args.redraws:  # the default representation (fits of the others take longer)
                row["fit"][rep]["redrawn"] = red = redrawn_agreement(listener, train_p + test_p, train_s + test_s,
                                                                     args.train_pairs, args.redraws, args.seed, rep)
                print(f"[{name}] {rep:12s} over {args.redraws} draws of {args.train_pairs} pairs: expected agreement "
                      f"{red['expected_agreement']:.3f} ± {red['expected_agreement_std']:.3f} (best possible "
                      f"{red['best_possible']:.3f}), noiseless {red['noiseless']:.3f} ± {red['noiseless_std']:.3f}",
                      flush=True)
        if not args.skip_tune:
            row["tunes"] = []
            for draw in range(args.tune_draws):
                if draw == 0:
                    pairs_dir, taste_dir = pref_dir, work / name / "taste-midi"
                else:  # a fresh draw of the judged pairs: other prompts of the pool, fresh pick noise
                    drng = random.Random(zlib.crc32(f"{name}/{draw}".encode()) + args.seed)
                    pool = list(zip(train_p + test_p, train_s + test_s))
                    chosen = drng.sample(pool, args.train_pairs)
                    pairs_dir = work / name / f"draw-{draw}" / "preferences"
                    shutil.rmtree(pairs_dir, ignore_errors=True)
                    record_pairs(pairs_dir, listener, [p for p, _ in chosen], [x for _, x in chosen], drng)
                    model, _ = fit_taste_any(read_pairs([pairs_dir]), "midi", args.model)
                    taste_dir = work / name / f"draw-{draw}" / "taste-midi"
                    model.save(taste_dir)
                out = work / name / f"tuned-{draw}"
                row["tunes"].append(run_tune(args, listener, tok, eval_p, eval_base, pairs_dir, taste_dir, out,
                                             random.Random(zlib.crc32(f"{name}/eval/{draw}".encode())), base_guard))
        results[name] = row
    print(json.dumps({"model": args.model, "load_average": round(_load(), 1), "results": results}, indent=1))
    print(f"work folder: {work}")
    return 0


def _load() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


if __name__ == "__main__":
    sys.exit(main())
