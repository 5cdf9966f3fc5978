"""Export a pretraining run's latest checkpoint as the shipped model, with a measured model card.

    python -m training.model_card --run runs/default --data runs/data --out resources/models/default

Copies the latest complete checkpoint (weights as float16 safetensors so the paper model stays
under the 40 MB budget — `Policy.load` upcasts to float32 —, config, tokenizer), then measures on
the exported weights and writes README.md (+ model_card.json with the same numbers):

* validation / test NLL per token, overall and per dataset (the `smart nll` computation on the
  prepared splits) — or, with `--nll-report`, the `smart nll` JSON already measured on these weights,
  and with `--compare-nll` the same figures of the model being replaced;
* with `--continuation-report`, the `smart eval-continuation` figures of the exported model next to
  the repeat-prompt and other-song baselines;
* generation sanity on procedural prompts (paper §3.5): the share of silent or near-empty outputs,
  and the paper's 8 MIDI features of the outputs next to the training data's (mean ± std), sampled
  with the shipped sampling defaults (`engine.api.GenerationSettings`), which the card states.

`--refresh-card` re-measures an exported model folder's card in place (generation sanity, and the
continuation benchmark with `--continuation-report`) without a run or touching the weights:

    python -m training.model_card --refresh-card --out resources/models/default --data runs/data
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.music import atomic_write_text

MAX_WEIGHTS_BYTES = 40 * 1024 * 1024
NEAR_EMPTY_NOTES = 4  # an output with fewer notes than this counts as silent / near-empty
# Token budget per generated bar in the sanity check: a dense 4/4 bar of the data is ~100 notes of
# 3–4 tokens each; 64 per bar (the old budget) cut most outputs short and made them look sparse.
TOKENS_PER_BAR = 512
SCALAR_FEATURES = ("n_notes", "polyphony_rate", "empty_beat_rate", "pitch_range", "scale_consistency",
                   "velocity_range")
HISTOGRAM_FEATURES = ("pitch_histogram", "velocity_histogram")


def export_checkpoint(ckpt: Path, out: Path) -> str:
    """Write the checkpoint's model (float16 weights) and tokenizer to `out`, replacing it atomically."""
    from engine.policy import Policy

    policy = Policy.load(ckpt)
    largest = max(float(p.detach().abs().max()) for p in policy.model.parameters())
    # float16 keeps 11 significant bits (bfloat16 only 8) where the weights' range allows it.
    dtype = torch.float16 if largest < 6e4 else torch.bfloat16
    policy.model.to(dtype)
    out = out.resolve()
    tmp = out.with_name(f".{out.name}.export-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    policy.save(tmp)
    size = (tmp / "model.safetensors").stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        shutil.rmtree(tmp)
        raise UserError(f"exported weights are {size / 2**20:.1f} MiB, over the {MAX_WEIGHTS_BYTES // 2**20} MiB budget")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)
    return str(dtype).removeprefix("torch.")


def _summary(values) -> dict:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std())} if len(arr) else {"mean": None, "std": None}


def feature_table(clips) -> dict:
    """Mean ± std of the scalar features, mean histograms for the histogram features."""
    from engine.features import midi_features

    feats = [midi_features(c) for c in clips]
    table = {k: _summary([f[k] for f in feats]) for k in SCALAR_FEATURES}
    for k in HISTOGRAM_FEATURES:
        table[k] = {"mean": np.mean([f[k] for f in feats], axis=0).tolist() if feats else None}
    return table


def data_excerpts(data_dir: Path, tokenizer, count: int, bars: int, seed: int = 0):
    """`count` random `bars`-bar excerpts of the training split, decoded to clips (the reference distribution)."""
    from training.data import TokenSplit

    split = TokenSplit(data_dir, "train")
    rng = np.random.default_rng(seed)
    lengths = np.array([s.length for s in split.sequences], dtype=float)
    tempo_ids = set(int(i) for i in tokenizer.kind_ids["Tempo"])
    clips = []
    for _ in range(count):
        seq = np.asarray(split[int(rng.choice(len(split), p=lengths / lengths.sum()))], dtype=np.int64)
        starts = np.flatnonzero(seq == tokenizer.bar_id)
        first = int(rng.integers(0, max(1, len(starts) - bars)))
        end = starts[first + bars] if first + bars < len(starts) else len(seq)
        before = [int(t) for t in seq[:starts[first]] if int(t) in tempo_ids]
        bpm = tokenizer.token_value(before[-1]) if before else None  # the tempo in force at the excerpt
        decoder = tokenizer.decoder(480, initial_bpm=bpm)
        decoder.feed_many(int(t) for t in seq[starts[first]:end])
        clips.append(decoder.clip())
    return clips


def generation_statistics(policy, data_dir: Path | None, prompts: int, bars: int, seed: int) -> dict:
    """Paper §3.5 sanity check: procedural prompts, sampled with the shipped sampling defaults."""
    from engine.policy import GenerationSettings

    clips, finished = [], []
    started = time.time()
    batch = 25
    shipped = GenerationSettings()
    for i in range(0, prompts, batch):
        settings = GenerationSettings(candidates=min(batch, prompts - i), seed=seed + i, bars=bars,
                                      max_new_tokens=TOKENS_PER_BAR * bars)
        cands, _ = policy.generate_procedural(settings)
        clips += [c.clip for c in cands]
        finished += [c.finished_by for c in cands]
    notes = np.array([len(c.notes) for c in clips])
    stats = {
        "prompts": prompts, "bars": bars, "temperature": shipped.temperature, "top_p": shipped.top_p,
        "temperature_factors": dict(shipped.temperature_factors), "grammar": True, "seed": seed,
        "max_new_tokens": TOKENS_PER_BAR * bars,
        "near_empty_threshold_notes": NEAR_EMPTY_NOTES,
        "silent_share": float((notes == 0).mean()),
        "near_empty_share": float((notes < NEAR_EMPTY_NOTES).mean()),
        "finished_by": {k: finished.count(k) for k in sorted(set(finished))},
        "seconds": round(time.time() - started, 1),
        "generated": feature_table(clips),
    }
    if data_dir is not None:
        stats["data"] = feature_table(data_excerpts(data_dir, policy.tokenizer, prompts, bars, seed))
        for k in HISTOGRAM_FEATURES:
            g, d = stats["generated"][k]["mean"], stats["data"][k]["mean"]
            stats[f"{k}_l1_to_data"] = float(np.abs(np.array(g) - np.array(d)).sum())
    return stats


def sampling_text(c: dict) -> str:
    """"temperature 0.9, top-p 0.95, temperature × 0.8 on Pitch" from a report's settings."""
    factors = c.get("temperature_factors") or {}
    return (f"temperature {c['temperature']:g}, top-p {c.get('top_p', 1.0):g}"
            + "".join(f", temperature × {v:g} on {k}" for k, v in sorted(factors.items())))


def _fmt(s: dict, digits: int = 3) -> str:
    if s.get("mean") is None:
        return "—"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


CONTINUATION_COLUMNS = (("in_key", "in key", 3), ("abs_log2_density", "abs log2 density ratio", 3),
                        ("polyphony_diff", "Δ polyphony", 3), ("pitch_range_diff", "Δ pitch range", 1),
                        ("velocity_range_diff", "Δ velocity range", 1), ("velocity_hist_l1", "velocity hist. L1", 3),
                        ("n_notes", "notes", 1), ("duplicate_rate", "duplicates", 3), ("silent", "silent", 3))


def continuation_lines(cont: dict | None) -> list[str]:
    if not cont:
        return []
    c = cont["config"]
    lines = ["## Continuation benchmark (`smart eval-continuation`)", "",
             f"{c['passages']} passages of the {c['split']} split ({', '.join(f'{d} {k}' for d, k in cont['datasets'].items())}): "
             f"{c['prompt_bars']} bars of prompt, {c['bars']} bars continued, {sampling_text(c)}, "
             f"seed {c['seed']}; compared with the true next {c['bars']} bars. Key: Krumhansl–Schmuckler "
             "on the true passage; `truth` is the true continuation itself (the ceiling for the key share).", "",
             "| data | system | " + " | ".join(h for _, h, _ in CONTINUATION_COLUMNS) + " |",
             "| --- | --- |" + " --- |" * len(CONTINUATION_COLUMNS)]
    for scope in ("all", *cont["datasets"]):
        for system, res in cont["systems"].items():
            r = res.get(scope)
            if r:
                cells = [f"{(r[k]['mean'] if isinstance(r[k], dict) else r[k]):.{d}f}" for k, _, d in CONTINUATION_COLUMNS]
                lines.append(f"| {scope} | {system} | " + " | ".join(cells) + " |")
    lines += ["", "Issue 14's targets on all passages: " + ", ".join(
        f"{k.replace('_', ' ')}: {'yes' if v else 'no'}" for k, v in cont["goals"].items()) + ".", ""]
    return lines


def render_card(info: dict) -> str:
    t, ev, gen = info["training"], info.get("evaluation", {}), info.get("generation")
    lines = [
        "# SMART Studio default model",
        "",
        "A Phi-3 causal transformer over MidiTok REMI tokens (time signatures, tempos, 20 velocity bins),",
        "pretrained as in the SMART paper §3.1 to continue solo-piano music and to regenerate a span of",
        "bars (bar-level fill-in-the-middle: `FIMPrefix … FIMSuffix … FIMMiddle … EOS`).",
        "",
        "## Licence — read this",
        "",
        "The training data includes **ASAP (CC BY-NC-SA 4.0)**. These weights are a derivative of it and",
        "**inherit its NonCommercial-ShareAlike terms**: they may be used and shared for non-commercial",
        "purposes only, with attribution, and derivatives (fine-tuned models such as GRPO/SMART runs started",
        "from these weights) must be shared under the same licence. The code of SMART Studio is MIT; that",
        "does not change the licence of these weights.",
        "",
        "## Training data",
        "",
        "| dataset | licence | what |",
        "| --- | --- | --- |",
        "| POP909 (Wang et al., ISMIR 2020) | MIT | 909 pop songs, piano arrangements (melody, bridge, accompaniment merged) |",
        "| ASAP v1.1 (Foscarin et al., ISMIR 2020) | CC BY-NC-SA 4.0 | classical piano performances (from MAESTRO) and quantized scores |",
        "",
        "Piano handling as in the paper: GM programs 1–8 merged into one track, duplicated notes removed,",
        "sustain pedal applied; leading empty bars trimmed; files with > 300 notes in a bar or > 20 % empty",
        "bars dropped. Train / validation / test are split **by canonical piece**: all performances and the",
        "score of an ASAP piece — its `_repeat` / `_no_repeat` folders included — and each POP909 song, with any",
        "other song sharing its melody, stay in one split (`training.data.canonical_pieces`).",
        "",
    ]
    data = info.get("data")
    if data:
        lines += ["| split | files | pieces | tokens |", "| --- | --- | --- | --- |"]
        for s in ("train", "val", "test"):
            d = data["splits"][s]
            lines.append(f"| {s} | {d['files']} | {d['pieces']} | {d['tokens']:,} |")
        lines += ["", f"Skipped files: {data['files_skipped']} of {data['files_found']} "
                  f"({'; '.join(x['file'] + ': ' + x['reason'] for x in data['skipped'][:5])}).", ""]
    lines += [
        "## Model and training",
        "",
        f"- Architecture: Phi-3, config `{t['config']}`: {t['layers']} layers, hidden {t['hidden_size']}, "
        f"{t['heads']} heads, context {t['context_length']} positions, vocabulary {t['vocab_size']}, "
        f"{t['parameters'] / 1e6:.1f} M parameters. Weights stored as {t['dtype']} (loaded as float32).",
        f"- Steps: {t['step']:,} of a planned {t['planned_steps']:,} (batch {t['batch_size']} × up to "
        f"{t['seq_len']} tokens), {t['tokens_seen']:,} tokens seen ({t['epochs']:.2f} epochs of the train split), "
        f"{t['hours']:.1f} h on {t['hardware']}.",
        f"- AdamW (β 0.9/0.95, weight decay 0.1), {_schedule_text(t)}; "
        f"{t['fim_rate']:.0%} of examples are bar-infilling; transposition ±5 semitones and ±10 % tempo jitter.",
        f"- Checkpoint: `{t['checkpoint']}`.",
    ]
    lines += [f"- {note}" for note in t.get("notes", [])]
    prior = t.get("init_from")
    if prior:
        if prior.get("step") is not None:
            chain = t.get("lineage") or {"steps": prior["step"], "tokens_seen": prior.get("tokens_seen") or 0}
            lines.append(
                f"- Started from the weights of `{prior['path']}`, whose last run trained {prior['step']:,} steps "
                f"({prior.get('tokens_seen') or 0:,} tokens, {prior.get('hours') or 0:.1f} h on {prior.get('hardware')}); "
                f"in all {t['step'] + chain['steps']:,} steps and {t['tokens_seen'] + chain['tokens_seen']:,} tokens "
                "(every earlier run included). The optimizer and LR schedule restarted with this run.")
        else:
            lines.append(f"- Started from the weights of `{prior['path']}` (no model card); the figures above count this run only.")
    lines += [
        "",
        "## Evaluation",
        "",
    ]
    if ev:
        windows = ev.get("by_context") or {str(ev.get("context")): {k: ev[k] for k in ("val", "test") if k in ev}}
        prev = ev.get("previous_model", {})
        if prev and not all(isinstance(v, dict) and set(v) <= {"val", "test"} for v in prev.values()):
            prev = {str(ev.get("context")): prev}  # a card written before reports were kept per window
        lines += ["Mean negative log-likelihood per token (nats; `smart nll` on the prepared splits, sliding "
                  "window of the stated length; pieces sampled with seed 0 up to a token budget):", "",
                  "| window | split | data | NLL / token | perplexity | tokens | files |"
                  + (" model replaced: NLL / token |" if prev else ""),
                  "| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if prev else "")]
        for context, splits in windows.items():
            for s in ("val", "test"):
                if s not in splits:
                    continue
                before_split = prev.get(context, {}).get(s, {})
                rows = [("all", splits[s])] + sorted(splits[s].get("by_dataset", {}).items())
                for name, e in rows:
                    before = before_split if name == "all" else before_split.get("by_dataset", {}).get(name, {})
                    lines.append(f"| {int(context):,} | {s} | {name} | {e['nll_per_token']:.4f} | {e['perplexity']:.2f} | "
                                 f"{e['tokens']:,} | {e['files']} |"
                                 + (f" {before['nll_per_token']:.4f} |" if before else (" — |" if prev else "")))
        last = t.get("last_validation")
        if last:
            lines += ["", f"Training-time validation at step {last['step']}: continuation loss "
                      f"{last['val_loss_continuation']:.4f}, infilling loss (middle bars only) {last['val_loss_infill']:.4f}."]
        lines.append("")
    else:
        lines += ["Not measured.", ""]
    sampling = info.get("sampling")
    if sampling:
        lines += ["## Sampling defaults", "",
                  f"Shipped (`engine.api.GenerationSettings`, used by `smart generate`, the host and the studio "
                  f"unless a request says otherwise): {sampling_text(sampling)}."]
        lines += [f"{note}" for note in sampling.get("notes", [])]
        lines.append("")
    lines += continuation_lines(info.get("continuation"))
    lines += ["## Generation sanity (paper §3.5 procedural prompts)", ""]
    if gen:
        lines += [
            f"{gen['prompts']} procedural prompts (BOS, Bar, random time signature, random tempo), {gen['bars']} bars each, "
            f"{sampling_text(gen)}, grammar-masked sampling, seed {gen['seed']}, at most "
            f"{gen.get('max_new_tokens', 64 * gen['bars'])} new tokens.", "",
            f"- Silent outputs (0 notes): **{gen['silent_share']:.0%}**; near-empty (< {gen['near_empty_threshold_notes']} "
            f"notes): **{gen['near_empty_share']:.0%}**.",
            f"- Stopped by: {', '.join(f'{k} {v}' for k, v in gen['finished_by'].items())}.", "",
            "The paper's 8 MIDI features (MusPy definitions; mean ± std) of the outputs and of random "
            f"{gen['bars']}-bar excerpts of the training data:", "",
            "| feature | generated | training data |", "| --- | --- | --- |",
        ]
        for k in SCALAR_FEATURES:
            lines.append(f"| {k} | {_fmt(gen['generated'][k])} | {_fmt(gen['data'][k]) if 'data' in gen else '—'} |")
        for k in HISTOGRAM_FEATURES:
            l1 = gen.get(f"{k}_l1_to_data")
            lines.append(f"| {k} | L1 distance of the mean histograms: {l1:.3f} | (reference) |" if l1 is not None
                         else f"| {k} | — | — |")
        lines.append("")
    else:
        lines += ["Not measured (" + info.get("generation_note", "skipped") + ").", ""]
    lines += ["## Files", "",
              "`config.json`, `model.safetensors`, `generation_config.json`, the REMI tokenizer "
              "(`remi_tokenizer.json`) and its word-level HF twin (`tokenizer.json`, `tokenizer_config.json`); "
              "`model_card.json` holds every number above. Load with `engine.policy.Policy.load(dir)`.", ""]
    return "\n".join(lines)


def _schedule_text(t: dict) -> str:
    sched = t.get("schedule") or {}
    if sched.get("kind") == "wsd":
        text = f"warmup–stable–decay: {t['warmup']} warmup steps to LR {t['lr']:g}, held"
        if sched.get("decay_start") is not None:
            text += (f", then a 1−sqrt decay from step {sched['decay_start']:,} over {sched['decay_steps']:,} steps "
                     f"to {t['lr'] * sched.get('min_ratio', 0.1):g}")
        return text + (f" (last LR {t['final_lr']:.3g})" if t.get("final_lr") is not None else "")
    return f"peak LR {t['lr']:g}, {t['warmup']} warmup steps then cosine"


def lineage(run_config: dict) -> dict | None:
    """Steps and tokens of every run behind the --init-from model, read from its card (before an
    export may overwrite it): {"steps", "tokens_seen"} of the whole chain, or None without a card."""
    prior = run_config.get("init_from_card")
    if not prior or prior.get("step") is None:
        return None
    steps, tokens = int(prior["step"]), int(prior.get("tokens_seen") or 0)
    try:
        earlier = json.loads((Path(run_config.get("init_from", "")) / "model_card.json").read_text())["training"]
    except (OSError, ValueError, KeyError, TypeError):
        return {"steps": steps, "tokens_seen": tokens}
    if int(earlier.get("step", -1)) != steps:
        # The folder no longer holds that model. A sibling continued from the same one (an earlier export of
        # this run, or another branch of it) carries the chain behind it: its lineage is ours.
        sibling = earlier.get("init_from") or {}
        if (earlier.get("lineage") and sibling.get("step") == prior.get("step")
                and sibling.get("tokens_seen") == prior.get("tokens_seen")):
            return dict(earlier["lineage"])
        return {"steps": steps, "tokens_seen": tokens}
    chain = earlier.get("lineage") or earlier.get("init_from") or {}
    steps += int(chain.get("steps", chain.get("step")) or 0)
    tokens += int(chain.get("tokens_seen") or 0)
    return {"steps": steps, "tokens_seen": tokens}


def nll_figures(report: dict) -> dict:
    keep = ("nll_per_token", "perplexity", "tokens", "files")
    return {**{k: report[k] for k in keep},
            "by_dataset": {d: {k: v[k] for k in keep} for d, v in report.get("by_dataset", {}).items()}}


def read_nll_reports(paths) -> dict:
    """{context: {split: figures}} from `smart nll` JSON outputs (one per split and sliding window)."""
    found: dict = {}
    for path in paths or []:
        try:
            report = json.loads(Path(path).read_text())
            split, context = report["split"], int(report["context"])
            found.setdefault(context, {})[split] = nll_figures(report)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path} is not a `smart nll` report: {exc}") from None
    return found


def continuation_summary(path: Path, model: str) -> dict:
    """The card's part of a `smart eval-continuation` report: `model` and the baselines."""
    from training.continuation_bench import OTHER, REPEAT, TRUTH

    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if model not in report.get("systems", {}):
        raise UserError(f"{path} has no system {model!r} (it has {', '.join(report.get('systems', {}))})")
    systems = {("this model" if k == model else k): v for k, v in report["systems"].items()
               if k in (model, REPEAT, OTHER, TRUTH)}
    return {"config": report["config"], "datasets": report["datasets"], "systems": systems,
            "goals": report["goals"][model], "others": [k for k in report["systems"] if k not in systems and k != model]}


def shipped_sampling(notes: list[str] | None = None) -> dict:
    """The sampling defaults every generation path takes unless told otherwise (`GenerationSettings`)."""
    from engine.api import GenerationSettings

    shipped = GenerationSettings()
    return {"temperature": shipped.temperature, "top_p": shipped.top_p,
            "temperature_factors": dict(shipped.temperature_factors), "notes": list(notes or [])}


def refresh_card(out: Path, data_dir: Path | None, *, prompts: int, bars: int, seed: int, skip_generation: bool = False,
                 continuation_report: Path | None = None, continuation_model: str | None = None,
                 sampling_notes: list[str] | None = None) -> dict:
    """Re-measure an exported model folder's card in place: the shipped sampling defaults, generation sanity
    (unless skipped) and, given a report, the continuation benchmark; the rest of the card is kept."""
    from engine.policy import Policy, PolicyLoadError

    try:
        info = json.loads((out / "model_card.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{out} has no readable model_card.json: {exc}") from None
    if continuation_report:
        info["continuation"] = continuation_summary(continuation_report, continuation_model)
    info["sampling"] = shipped_sampling(sampling_notes)
    if not skip_generation:
        try:
            policy = Policy.load(out)
        except PolicyLoadError as exc:
            raise UserError(str(exc)) from None
        info["generation"] = generation_statistics(policy, data_dir, prompts, bars, seed)
    atomic_write_text(out / "model_card.json", json.dumps(info, indent=1))
    atomic_write_text(out / "README.md", render_card(info))
    return info


def build_card(run_dir: Path, out: Path, data_dir: Path | None, *, prompts: int, bars: int, seed: int,
               nll_max_tokens: int | None, skip_generation: bool = False, nll_reports=None, compare_nll=None,
               continuation_report: Path | None = None, continuation_model: str | None = None,
               notes: list[str] | None = None, sampling_notes: list[str] | None = None) -> dict:
    from engine.policy import Policy
    from training.nll import evaluate
    from training.pretrain import LOG_FILE, latest_checkpoint, load_training_state

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise UserError(f"no complete checkpoint in {run_dir}/checkpoints")
    state = load_training_state(ckpt)
    run_config = json.loads((run_dir / "run_config.json").read_text()) if (run_dir / "run_config.json").exists() else {}
    if data_dir is None and run_config.get("data"):
        data_dir = Path(run_config["data"])
    chain = lineage(run_config)  # read before the export may replace the --init-from folder
    measured = read_nll_reports(nll_reports)
    previous = read_nll_reports(compare_nll)
    continuation = continuation_summary(continuation_report, continuation_model) if continuation_report else None
    weights_dtype = export_checkpoint(ckpt, out)
    policy = Policy.load(out)
    desc = policy.describe()
    manifest = json.loads((data_dir / "manifest.json").read_text()) if data_dir and (data_dir / "manifest.json").exists() else None
    last_val = None
    log = run_dir / LOG_FILE
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "val_loss_continuation" in rec and rec["step"] <= state["step"]:
                last_val = {k: rec[k] for k in ("step", "val_loss_continuation", "val_loss_infill")}
    train_tokens = manifest["splits"]["train"]["tokens"] if manifest else None
    seq_len = int(run_config.get("seq_len", state.get("seq_len", 1024)))
    schedule = state.get("schedule") or run_config.get("schedule") or {}
    info = {
        "training": {
            "config": run_config.get("config", state.get("config")), "layers": desc["layers"],
            "hidden_size": desc["hidden_size"], "heads": desc["heads"], "context_length": desc["context_length"],
            "vocab_size": desc["vocab_size"], "parameters": desc["parameters"],
            "dtype": weights_dtype,
            "step": int(state["step"]), "planned_steps": int(run_config.get("steps", state["step"])),
            "batch_size": run_config.get("batch_size"), "seq_len": seq_len, "tokens_seen": int(state.get("tokens_seen", 0)),
            "epochs": (state.get("tokens_seen", 0) / train_tokens) if train_tokens else float("nan"),
            "hours": float(state.get("elapsed_seconds", 0)) / 3600, "hardware": run_config.get("hardware", "CPU (2 cores, shared)")
            if not torch.cuda.is_available() else torch.cuda.get_device_name(),
            "lr": schedule.get("peak", run_config.get("lr")), "warmup": schedule.get("warmup", run_config.get("warmup")),
            "fim_rate": run_config.get("fim_rate", 0.25),
            # What a run continuing this model may warm to (`smart pretrain --init-from` caps its LR here):
            # the stable phase's LR, whether or not this export was decayed below it.
            "stable_lr": schedule.get("peak", run_config.get("lr")), "final_lr": state.get("lr"),
            "schedule": schedule or None, "precision": state.get("precision", run_config.get("precision")),
            "decay_of": run_config.get("decay_of"),
            "checkpoint": str(ckpt), "last_validation": last_val,
            "init_from": run_config.get("init_from_card"),
            "lineage": chain,
            "notes": list(notes or []),
        },
        "data": manifest and {k: manifest[k] for k in ("files_found", "files_used", "files_skipped", "splits", "skipped")},
        "evaluation": {},
    }
    if measured:
        # The first report's window is the headline ("context", "val", "test"); every window measured is
        # kept under "by_context" so a target stated at another window (issue 21: 1,024) is read off it.
        primary = next(iter(measured))
        info["evaluation"]["context"] = primary
        info["evaluation"]["source"] = "smart nll reports on the exported weights"
        info["evaluation"].update(measured[primary])
        info["evaluation"]["by_context"] = {str(c): splits for c, splits in sorted(measured.items())}
    elif data_dir is not None:
        info["evaluation"]["context"] = seq_len
        for split in ("val", "test"):
            r = evaluate(None, [str(data_dir)], split=split, context=seq_len, max_tokens=nll_max_tokens,
                         per_dataset=True, policy=policy)
            info["evaluation"][split] = nll_figures(r)
    if previous:
        info["evaluation"]["previous_model"] = {str(c): splits for c, splits in sorted(previous.items())}
    if continuation:
        info["continuation"] = continuation
    info["sampling"] = shipped_sampling(sampling_notes)
    have_generation = all((Path(__file__).resolve().parent.parent / "engine" / f).exists()
                          for f in ("fastdecode.py", "features.py"))
    if skip_generation or not have_generation:
        info["generation"] = None
        info["generation_note"] = "skipped on request" if skip_generation else "engine/fastdecode.py or engine/features.py missing"
    else:
        info["generation"] = generation_statistics(policy, data_dir, prompts, bars, seed)
    atomic_write_text(out / "model_card.json", json.dumps(info, indent=1))
    atomic_write_text(out / "README.md", render_card(info))
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.model_card", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=None, help="pretraining run folder (with checkpoints/)")
    p.add_argument("--refresh-card", action="store_true",
                   help="re-measure the card of the model folder --out in place (no --run; weights untouched)")
    p.add_argument("--sampling-note", action="append", default=None, metavar="TEXT",
                   help="a line for the card's sampling-defaults section (how they were chosen)")
    p.add_argument("--out", type=Path, default=None, help="model folder to write (default: resources/models/default)")
    p.add_argument("--data", type=Path, default=None, help="prepared DATA_DIR (default: the run's --data)")
    p.add_argument("--prompts", type=int, default=100, help="procedural prompts for the generation check")
    p.add_argument("--bars", type=int, default=4, help="bars generated per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nll-max-tokens", type=int, default=200_000,
                   help="score about this many tokens per split (0: all; the full test split is slow on CPU)")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--nll-report", nargs="+", type=Path, default=None, metavar="JSON",
                   help="`smart nll` outputs measured on these weights (one per split) instead of measuring here")
    p.add_argument("--compare-nll", nargs="+", type=Path, default=None, metavar="JSON",
                   help="`smart nll` outputs of the model being replaced, tabled next to the new figures")
    p.add_argument("--continuation-report", type=Path, default=None, metavar="JSON",
                   help="a `smart eval-continuation` continuation.json that includes this model")
    p.add_argument("--continuation-model", default=None, metavar="NAME",
                   help="this model's name in --continuation-report")
    p.add_argument("--note", action="append", default=None, metavar="TEXT",
                   help="a line for the card's training section (e.g. a schedule changed on --resume)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    from transformers.utils import logging as hf_logging

    from engine.policy import DEFAULT_MODEL_DIR

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.run is None) == (not args.refresh_card):
        p.error("give --run (export a run's checkpoint) or --refresh-card (re-measure --out in place)")
    try:
        if args.refresh_card:
            out = args.out or DEFAULT_MODEL_DIR
            info = refresh_card(out, args.data, prompts=args.prompts, bars=args.bars, seed=args.seed,
                                skip_generation=args.skip_generation, continuation_report=args.continuation_report,
                                continuation_model=args.continuation_model, sampling_notes=args.sampling_note)
            gen = info.get("generation") or {}
            print(json.dumps({"out": str(out), "sampling": info["sampling"],
                              "silent_share": gen.get("silent_share"), "near_empty_share": gen.get("near_empty_share")}))
            return 0
        info = build_card(args.run, args.out or DEFAULT_MODEL_DIR, args.data, prompts=args.prompts, bars=args.bars,
                          seed=args.seed, nll_max_tokens=args.nll_max_tokens or None,
                          skip_generation=args.skip_generation, nll_reports=args.nll_report,
                          compare_nll=args.compare_nll, continuation_report=args.continuation_report,
                          continuation_model=args.continuation_model, notes=args.note,
                          sampling_notes=args.sampling_note)
    except UserError as exc:
        print(f"model_card: {exc}", file=sys.stderr)
        return 2
    gen = info.get("generation") or {}
    print(json.dumps({"out": str(args.out or DEFAULT_MODEL_DIR), "step": info["training"]["step"],
                      **{f"{s}_nll": info["evaluation"].get(s, {}).get("nll_per_token") for s in ("val", "test")},
                      "near_empty_share": gen.get("near_empty_share")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
