"""`smart taste`: learn a musician's taste from their preference pairs, score by it, tune toward it.

    smart taste fit SONG.preferences ~/.local/share/smart-studio/preferences --out taste/
    smart taste score --taste taste/ a.mid b.mid [--prompt prompt.mid]
    smart taste tune --model resources/models/default --taste taste/ --pairs SONG.preferences --out runs/mine
    smart taste pairs SONG.preferences [--export pairs.zip] [--reset]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.cliutil import HelpFormatter, examples
from engine.errors import UserError


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers) -> None:
    from engine.taste import MIN_PAIRS

    p = subparsers.add_parser("taste", help="learn your taste from your A/B picks; score and tune by it",
                              description=__doc__.split("\n\n", 1)[0],
                              formatter_class=HelpFormatter,
                              epilog="examples:\n" + __doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="taste_command", metavar="ACTION")

    fit = sub.add_parser("fit", help="fit a Bradley–Terry taste model on preference pairs; prints a JSON report",
                         formatter_class=HelpFormatter,
                         epilog=examples("smart taste fit SONG.preferences ~/.local/share/smart-studio/preferences "
                                         "--out taste/"))
    fit.add_argument("pairs", nargs="+", metavar="PAIRS_DIR", help="preference set folders (preferences.jsonl + pairs/)")
    fit.add_argument("--out", required=True, help="taste directory to write")
    fit.add_argument("--representation", default="midi",
                     help="midi (default: the paper's features + register, lengths, density, prompt relation) | "
                          "paper | hidden | midi+hidden (pooled policy states: needs --model)")
    fit.add_argument("--model", help="policy directory whose hidden states a hidden representation pools")
    fit.add_argument("--min-pairs", type=_positive_int, default=None,
                     help=f"decisive pairs needed to claim a taste (default: {MIN_PAIRS})")
    fit.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    fit.set_defaults(func=run_fit)

    score = sub.add_parser("score", help="score MIDI continuations by a taste; one JSON line per file",
                           formatter_class=HelpFormatter,
                           epilog=examples("smart taste score --taste taste/ a.mid b.mid --prompt prompt.mid"))
    score.add_argument("--taste", required=True, help="taste directory (smart taste fit --out)")
    score.add_argument("--prompt", help="the prompt MIDI the files continue (default: none)")
    score.add_argument("files", nargs="+", metavar="FILE.mid", help="MIDI continuations to score")
    score.set_defaults(func=run_score)

    tune = sub.add_parser("tune", help="fine-tune a policy toward a taste (DPO or GRPO); OUT is a model directory",
                          formatter_class=HelpFormatter,
                          epilog=examples("smart taste tune --model resources/models/default --taste taste/ "
                                          "--pairs SONG.preferences --out runs/mine"))
    tune.add_argument("--model", required=True, help="base policy directory")
    tune.add_argument("--taste", help="taste directory (ranks fresh samples for DPO; GRPO's reward)")
    tune.add_argument("--pairs", nargs="+", required=True, metavar="PAIRS_DIR", help="preference set folders")
    tune.add_argument("--out", required=True, help="output model directory")
    tune.add_argument("--method", choices=("dpo", "grpo"), default="dpo",
                      help="dpo: learn from the pairs directly; grpo: sample and reward by the taste (needs --taste)")
    tune.add_argument("--steps", type=int, help="optimizer steps (default: dpo 2 epochs, grpo 20)")
    tune.add_argument("--beta", type=float, help="KL strength (default: dpo 0.1, grpo 0.04)")
    tune.add_argument("--lr", type=float, help="learning rate (default 5e-5)")
    tune.add_argument("--synthetic-prompts", type=int,
                      help="dpo: prompts whose fresh samples the taste ranks into extra pairs (default 20; 0 = none)")
    tune.add_argument("--seed", type=int, default=0, help="random seed (sampling, example order)")
    tune.add_argument("--cpu-threads", type=int, help="torch CPU threads (default: torch's)")
    tune.add_argument("--max-drift", type=float, help="drift guard: the tuned samples' musical features may move this "
                                                      "many base standard deviations (default 1; 0 = off)")
    tune.add_argument("--drift-action", choices=("warn", "stop"), help="beyond --max-drift: warn (default) | stop")
    tune.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    tune.set_defaults(func=run_tune)

    pairs = sub.add_parser("pairs", help="inspect, export or reset a preference set",
                           formatter_class=HelpFormatter,
                           epilog=examples("smart taste pairs SONG.preferences --export pairs.zip"))
    pairs.add_argument("dir", metavar="PAIRS_DIR", help="the preference set folder")
    pairs.add_argument("--export", metavar="ZIP", help="write the set to a zip archive")
    pairs.add_argument("--reset", action="store_true", help="delete every judgement of the set")
    pairs.set_defaults(func=run_pairs)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _read_pairs(dirs):
    from engine.preferences import read_pairs

    try:
        return read_pairs(dirs)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None


def run_fit(args) -> int:
    from engine.taste import MIN_PAIRS, REPRESENTATIONS, fit_taste

    pairs = _read_pairs(args.pairs)
    kwargs = {"min_pairs": args.min_pairs if args.min_pairs is not None else MIN_PAIRS, "seed": args.seed}
    if args.representation in REPRESENTATIONS:
        model, problems = fit_taste(pairs, args.representation, **kwargs)  # torch-free
    else:
        from training.taste import fit_taste_any

        model, problems = fit_taste_any(pairs, args.representation, args.model, **kwargs)
    for line in problems:
        print(f"smart taste fit: skipped {line}", file=sys.stderr)
    model.save(args.out)
    r = model.report
    cv = r.get("cv") or {}
    out = {"out": str(args.out), "pairs": r["pairs"], "decisive": r["decisive"], "ties": r["ties"],
           "accuracy": r["accuracy"], "accuracy_interval": cv.get("accuracy_interval"), "ready": r["ready"],
           "confident": r["confident"], "min_pairs": r["min_pairs"], "representation": r["representation"],
           "lambda": r["lambda"], "top_features": model.top_features()}
    if not r["ready"]:
        out["note"] = (f"{r['decisive']} decisive pairs: too few to say anything about your taste "
                       f"(needs {r['min_pairs']}); cross-validation on them: {cv or 'not possible'}")
    print(json.dumps(out))
    return 0


def run_score(args) -> int:
    from engine.taste import TasteModel, load_midi

    model = TasteModel.load(args.taste)
    model.check_ready()
    prompt = load_midi(args.prompt) if args.prompt else None
    scorer = None
    if model.representation not in ("midi", "paper"):
        from training.taste import TasteScorer

        scorer = TasteScorer(model)
    failed = 0
    for path in args.files:
        try:
            clip = load_midi(path)
            if scorer is None:
                s, sd = model.score(clip, prompt)
            else:
                sv, sdv = scorer.score_many([clip], [prompt])
                s, sd = float(sv[0]), float(sdv[0])
        except UserError as exc:
            print(f"smart taste score: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps({"file": path, "taste": round(s, 4), "taste_std": round(sd, 4)}), flush=True)
    return 2 if failed else 0


def run_tune(args) -> int:
    import warnings

    from training.taste import TuneConfig, tune

    warnings.filterwarnings("ignore", message=".*(gradient_checkpointing|is_gradient_checkpointing).*deprecated",
                            category=FutureWarning)
    config = TuneConfig.from_options(
        {"model": args.model, "method": args.method, "steps": args.steps, "beta": args.beta, "lr": args.lr,
         "synthetic_prompts": args.synthetic_prompts, "seed": args.seed, "cpu_threads": args.cpu_threads,
         "max_drift": args.max_drift, "drift_action": args.drift_action},
        taste=args.taste, pairs=list(args.pairs), out_dir=args.out)

    def on_event(event: dict) -> None:
        if not args.quiet and event.get("event") not in (None, "done"):
            print(f"smart taste tune: {json.dumps(event)}", file=sys.stderr, flush=True)

    card = tune(config, on_event=on_event)
    print(json.dumps({"out": str(Path(args.out)), **{k: v for k, v in card.items() if k != "config"}}))
    return 0


def run_pairs(args) -> int:
    from engine.preferences import FILE, PreferenceSet

    prefs = PreferenceSet(args.dir)
    if not (prefs.dir / FILE).is_file():
        raise UserError(f"no {FILE} in {args.dir}")
    out = prefs.summary()
    if args.export:
        out["exported"] = str(prefs.export(args.export))
    if args.reset:
        out["reset"] = prefs.reset()
    print(json.dumps(out))
    return 0
