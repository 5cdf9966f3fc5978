"""Taste on the training side: hidden-state features, simulated listeners, and tuning the policy
toward a musician's taste (`smart taste tune`).

    from training.taste import TuneConfig, tune
    tune(TuneConfig(model="resources/models/default", taste="taste/", pairs=["SONG.preferences"], out_dir="runs/t"))

Methods:
* `dpo` — TRL `DPOTrainer` on chosen/rejected continuations: the musician's decisive pairs
  (prompt = the tokenized prompt MIDI, chosen/rejected = the tokenized continuations, through the
  word-level HF tokenizer of `engine.tokenizer`), plus `synthetic_prompts` × (best, worst) pairs
  of fresh base-model samples at the musician's prompts ranked by the taste model (on-policy pairs:
  40 judgements alone move a 14M-parameter policy little).
* `grpo` — `training.grpo.run_grpo` with the taste score as its reward (its KL term and diversity
  guard included) at the musician's prompts.
Either way OUT/ is a plain Policy directory (`smart generate --model OUT` loads it), with
`taste_tune.json` (what was done) and, for DPO, `events.jsonl` (one line per logged step).

Simulated listeners (`LISTENERS`) stand in for a musician in tests and benchmarks: each prefers one
musical quality, with Bradley–Terry noise. Their numbers are never a person's.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from engine.api import TASTE_OPTION_NAMES, TasteTuneOptions, validate_taste_tune_options
from engine.errors import UserError
from engine.meter import model_meter
from engine.music import Clip, atomic_write_text
from engine.taste import (REPRESENTATIONS, Comparisons, TasteModel, comparisons_from_pairs, continuation_span,
                          feature_dict, fit_comparisons, load_midi, midi_vector, top_voice)

HIDDEN = "hidden"
BOTH = "midi+hidden"


# ---------------------------------------------------------------------------- simulated listeners
@dataclass(frozen=True)
class SimulatedListener:
    """Prefers continuations with more of one quality: P(a ≻ b) = σ(u(a) − u(b)), u = gain × quality.
    A silent continuation is never preferred to one with notes (there is nothing to hear)."""

    name: str
    quality: str  # a key of engine.taste.feature_dict
    gain: float

    def utility(self, continuation: Clip, prompt: Clip | None = None) -> float:
        d = feature_dict(continuation, prompt)
        if d["silent"]:
            return -1e6
        measure = LISTENER_MEASURES.get(self.quality)
        return self.gain * (measure(continuation, prompt) if measure else d[self.quality])

    def probability(self, a: Clip, b: Clip, prompt: Clip | None = None) -> float:
        diff = self.utility(a, prompt) - self.utility(b, prompt)
        return 1.0 / (1.0 + math.exp(-max(min(diff, 50.0), -50.0)))

    def choose(self, a: Clip, b: Clip, prompt: Clip | None, rng: random.Random) -> str:
        """"A" or "B", with Bradley–Terry noise."""
        return "A" if rng.random() < self.probability(a, b, prompt) else "B"


def top_line_net_rise(continuation: Clip, prompt: Clip | None = None) -> float:
    """Semitones from the top voice's first onset to its last in the continuation (0 with one onset).
    Deliberately not one of the taste's features: a listener defined by a feature would test nothing."""
    _, top = top_voice(continuation_span(continuation, prompt)[0])
    return float(top[-1] - top[0]) if len(top) > 1 else 0.0


# Qualities a listener may prefer that are not taste features (name → measure of a continuation).
LISTENER_MEASURES: dict[str, Callable[[Clip, Clip | None], float]] = {"top_line_net_rise": top_line_net_rise}

# Gains: between two 2-bar continuations of one prompt by the shipped model, the median difference
# is 3.4 semitones of mean pitch, 0.28 octaves of note rate and 0.49 octaves of note length
# (measured on 40 pairs); each gain makes that median difference 2 units of utility, so on a typical
# pair the listener picks the one it prefers 88 % of the time (σ(2)) and on close pairs it is unsure.
LISTENERS: dict[str, SimulatedListener] = {
    "high-register": SimulatedListener("high-register", "mean_pitch", 0.6),
    "sparse": SimulatedListener("sparse", "log_notes_per_beat", -7.0),
    "long-notes": SimulatedListener("long-notes", "mean_log_duration", 4.0),
    # median difference 14.5 semitones of net rise of the top voice (same 40 pairs): gain 2 / 14.5
    "rising-line": SimulatedListener("rising-line", "top_line_net_rise", 0.14),
}


# ---------------------------------------------------------------------------- hidden-state features
def _rollout_ids(tokenizer, continuation: Clip, prompt: Clip | None) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids): the prompt as the policy saw it (BOS + its tokens up to the
    bar the continuation starts in), the continuation as the tokens that follow it. Both are read in the
    meter the model reads (`engine.meter.model_meter`: a 1/4 file is re-barred as 4/4)."""
    continuation = model_meter(continuation)[0]
    prompt = model_meter(prompt)[0] if prompt is not None else None
    if prompt is not None and prompt.notes:
        at = prompt.end_tick
        merged = prompt.with_notes(list(prompt.notes) + [n for n in continuation.notes if n.start >= 0])
        prompt_ids = tokenizer.continuation_prompt(prompt, at)
    else:
        merged = continuation
        ts = continuation.time_signature
        prompt_ids = [tokenizer.bos_id] + tokenizer.header_ids((ts.numerator, ts.denominator), continuation.bpm)[:2]
    full = [tokenizer.bos_id] + tokenizer.encode(merged) if merged.notes else list(prompt_ids)
    k = 0
    while k < min(len(prompt_ids), len(full)) and prompt_ids[k] == full[k]:
        k += 1
    return full[:k], full[k:]


class HiddenFeatures:
    """Mean-pooled last hidden states of a policy over a continuation's tokens, given its prompt."""

    def __init__(self, model_dir: str | Path, max_tokens: int = 1024):
        import torch

        from engine.policy import Policy

        self.model_dir = str(model_dir)
        self.policy = Policy.load(model_dir)
        self.max_tokens = max_tokens
        self.torch = torch

    def vector(self, continuation: Clip, prompt: Clip | None = None) -> np.ndarray:
        torch = self.torch
        prompt_ids, cont_ids = _rollout_ids(self.policy.tokenizer, continuation, prompt)
        ids = (prompt_ids + cont_ids)[-self.max_tokens:]
        n_cont = min(len(cont_ids), len(ids))
        with torch.inference_mode():
            out = self.policy.model(torch.tensor([ids]), output_hidden_states=True)
        h = out.hidden_states[-1][0]
        pooled = h[-n_cont:].mean(0) if n_cont else h[-1]
        return pooled.float().numpy().astype(np.float64)

    def vectorizer(self, with_midi: bool = False) -> Callable[[Path, Path | None], np.ndarray]:
        prompts: dict[Path, Clip] = {}

        def vectorize(path: Path, prompt_path: Path | None) -> np.ndarray:
            prompt = None
            if prompt_path is not None:
                prompt = prompts.setdefault(prompt_path, load_midi(prompt_path))
            clip = load_midi(path)
            v = self.vector(clip, prompt)
            return np.concatenate([midi_vector(clip, prompt), v]) if with_midi else v

        return vectorize


def feature_names(representation: str, hidden_size: int) -> list[str]:
    hidden = [f"hidden_{i}" for i in range(hidden_size)]
    if representation == HIDDEN:
        return hidden
    if representation == BOTH:
        return list(REPRESENTATIONS["midi"]) + hidden
    return list(REPRESENTATIONS[representation])


def fit_taste_any(pairs: Sequence, representation: str = "midi", model_dir: str | None = None,
                  **kwargs) -> tuple[TasteModel, list[str]]:
    """`engine.taste.fit_taste` for every representation (hidden states need `model_dir`)."""
    from engine.taste import fit_taste

    if representation in REPRESENTATIONS:
        return fit_taste(pairs, representation, **kwargs)
    if representation not in (HIDDEN, BOTH):
        raise UserError(f"unknown representation {representation!r}")
    if not model_dir:
        raise UserError(f"the {representation} representation needs --model DIR (the policy whose states it pools)")
    # Hundreds of features: a Gaussian prior (one Newton solve per fit; the Laplace prior's many would take minutes).
    kwargs.setdefault("prior", "gaussian")
    feats = HiddenFeatures(model_dir)
    comp, problems = comparisons_from_pairs(pairs, feats.vectorizer(with_midi=representation == BOTH))
    names = feature_names(representation, int(feats.policy.model.config.hidden_size))
    if len(comp) == 0:
        comp = Comparisons(np.zeros((0, len(names))), comp.a, comp.b, comp.y)
    model = fit_comparisons(comp, names, representation, **kwargs)
    model.extra["model"] = str(Path(model_dir).resolve())
    model.report["skipped"] = problems
    return model, problems


class TasteScorer:
    """Scores continuations with a taste of any representation (loads the policy when it needs it)."""

    def __init__(self, taste: TasteModel | str | Path):
        self.taste = taste if isinstance(taste, TasteModel) else TasteModel.load(taste)
        self.hidden = None
        if self.taste.representation in (HIDDEN, BOTH):
            self.hidden = HiddenFeatures(self.taste.extra["model"])

    def vector(self, continuation: Clip, prompt: Clip | None = None) -> np.ndarray:
        rep = self.taste.representation
        if rep in REPRESENTATIONS:
            return midi_vector(continuation, prompt, self.taste.feature_names)
        h = self.hidden.vector(continuation, prompt)
        return np.concatenate([midi_vector(continuation, prompt), h]) if rep == BOTH else h

    def score_many(self, continuations: Sequence[Clip], prompts: Sequence[Clip | None]) -> tuple[np.ndarray, np.ndarray]:
        self.taste.check_ready()
        X = np.stack([self.vector(c, p) for c, p in zip(continuations, prompts)])
        return self.taste.score_vectors(X)


# ---------------------------------------------------------------------------- tuning
@dataclass
class TuneConfig(TasteTuneOptions):
    """`smart taste tune`: fine-tune a policy toward a taste (see the module docstring). What a client chooses
    (`engine.api.TasteTuneOptions`: its types, bounds and defaults, here with the tuner's own learning rate
    and synthetic prompts) plus what only the tuner sets: where the taste, pairs and output are, and the
    sampling and batch sizes."""

    lr: float = 5e-5
    synthetic_prompts: int = 20  # dpo: prompts whose fresh samples the taste ranks (0 = the musician's pairs only)
    taste: str | None = None  # a taste directory (ranks synthetic DPO pairs; the GRPO reward)
    pairs: list[str] = field(default_factory=list)  # preference set directories
    out_dir: str = ""
    batch: int = 8  # pairs per DPO step
    synthetic_candidates: int = 6  # samples per synthetic prompt; the best and worst make a pair
    bars: int = 2  # length of generated continuations
    prompt_bars: int = 4  # bars of a prompt MIDI the model continues
    temperature: float = 1.0
    top_p: float = 0.95
    group: int = 8  # grpo: completions per prompt
    prompts_per_step: int = 4  # grpo
    max_completion_tokens: int = 160  # grpo
    min_diversity: float | None = 0.6  # grpo: the diversity guard

    @classmethod
    def from_options(cls, options: dict, **tuner) -> "TuneConfig":
        """A config from a client's option values (None: the tuner's default) and the tuner's own fields."""
        return cls(**{k: v for k, v in options.items() if k in TASTE_OPTION_NAMES and v is not None}, **tuner)

    def validate(self) -> None:
        if not self.model:
            raise UserError("no model directory given (--model DIR)")
        if not self.out_dir:
            raise UserError("no output directory given (--out DIR)")
        if self.method == "grpo" and not self.taste:
            raise UserError("grpo tunes on the taste's scores: give --taste DIR")
        validate_taste_tune_options({name: getattr(self, name) for name in TASTE_OPTION_NAMES})
        if self.batch < 1 or self.synthetic_candidates < 2 and self.synthetic_prompts:
            raise UserError("batch must be ≥ 1 and synthetic candidates ≥ 2")


def _common_prefix(x: Sequence[int], y: Sequence[int]) -> int:
    k = 0
    while k < min(len(x), len(y)) and x[k] == y[k]:
        k += 1
    return k


def pair_ids(tokenizer, chosen: Clip, rejected: Clip, prompt: Clip | None) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) token ids of a judged pair; the prompt is what both continue."""
    p1, c1 = _rollout_ids(tokenizer, chosen, prompt)
    p2, c2 = _rollout_ids(tokenizer, rejected, prompt)
    full1, full2 = p1 + c1, p2 + c2
    k = min(len(p1), len(p2), _common_prefix(full1, full2))
    return full1[:k], full1[k:], full2[k:]


def _prompt_clips(pairs: Sequence) -> list[Clip | None]:
    seen: dict[str, Clip | None] = {}
    for p in pairs:
        key = str(p.prompt)
        if key not in seen:
            seen[key] = model_meter(load_midi(p.prompt))[0] if p.prompt is not None else None
    return list(seen.values())


@dataclass
class Sample:
    """One sampled continuation: its prompt ids, its completion ids and its notes (at their ticks after the prompt)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    clip: Clip


def sample_continuations(model, tokenizer, prompts: Sequence[Clip | None], n: int, *, bars: int = 2,
                         temperature: float = 1.0, top_p: float = 0.95, seed: int = 0, batch: int = 32,
                         ppq: int = 480) -> list[list[Sample]]:
    """n continuations of `bars` bars for every prompt (None: a procedural prompt), sampled in batches
    with the fast decoder (`training.rollouts.fast_generate`); the same seed gives the same random
    stream, so two models compared at one seed see the same draws."""
    import torch

    from training.rollouts import fast_generate

    rng = random.Random(seed)
    rows: list[tuple[int, list[int]]] = []
    for i, prompt in enumerate(prompts):
        if prompt is not None and prompt.notes:
            ids = tokenizer.continuation_prompt(prompt)
        else:
            ids = tokenizer.procedural_prompt(rng)
        rows += [(i, ids)] * n
    # A bar of piano rarely needs 80 tokens; the cut below keeps whole bars only.
    max_new = 80 * bars + 16
    gen = torch.Generator(device=next(model.parameters()).device)
    gen.manual_seed(seed)
    completions: list[list[int]] = []
    was_training = model.training
    model.eval()
    for start in range(0, len(rows), batch):
        chunk = [ids for _, ids in rows[start:start + batch]]
        completions += fast_generate(model, chunk, max_new_tokens=max_new, temperature=temperature, top_p=top_p,
                                     top_k=0, eos_ids=[tokenizer.eos_id], pad_id=tokenizer.pad_id, generator=gen)
    model.train(was_training)
    out: list[list[Sample]] = [[] for _ in prompts]
    for (i, p_ids), comp in zip(rows, completions):
        # The prompt ends inside the bar the continuation opens: `bars` bars end at the bars-th new Bar.
        cut, seen = [], 0
        for t in comp:
            if t == tokenizer.eos_id or t == tokenizer.pad_id:
                break
            if t == tokenizer.bar_id:
                seen += 1
                if seen >= bars:
                    break
            cut.append(int(t))
        out[i].append(sample_from_ids(tokenizer, p_ids, cut, ppq))
    return out


def sample_from_ids(tokenizer, prompt_ids: Sequence[int], completion_ids: Sequence[int], ppq: int = 480) -> Sample:
    """A Sample from its ids: the completion's notes decoded after the prompt's (so at their ticks after it)."""
    dec = tokenizer.decoder(ppq)
    dec.feed_many(prompt_ids)
    n_prompt = len(dec.notes)
    dec.feed_many(completion_ids)
    clip = dec.clip()
    return Sample(list(prompt_ids), list(completion_ids), clip.with_notes(clip.notes[n_prompt:]))


def synthetic_pairs(model, tokenizer, scorer: "TasteScorer", prompts: Sequence[Clip | None], config: TuneConfig,
                    ) -> list[tuple[list[int], list[int], list[int]]]:
    """On-policy pairs: `synthetic_candidates` samples of the policy at each of `synthetic_prompts` prompts
    (cycled from the musician's), the taste's best as chosen and its worst as rejected."""
    chosen = [prompts[i % len(prompts)] if prompts else None for i in range(config.synthetic_prompts)]
    contexts = [p.last_bars(config.prompt_bars) if p is not None and p.notes else None for p in chosen]
    samples = sample_continuations(model, tokenizer, contexts, config.synthetic_candidates, bars=config.bars,
                                   temperature=config.temperature, top_p=config.top_p, seed=config.seed + 1)
    out = []
    for ctx, group in zip(contexts, samples):
        prompt = [tokenizer.decode(s.prompt_ids) for s in group]
        scores, _ = scorer.score_many([s.clip for s in group], [p if p.notes else None for p in prompt])
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        if scores[best] == scores[worst] or group[best].prompt_ids != group[worst].prompt_ids:
            continue
        out.append((group[best].prompt_ids, group[best].completion_ids, group[worst].completion_ids))
    return out


def _dpo_dataset(tokenizer, triples: Sequence[tuple[list[int], list[int], list[int]]]):
    """TRL's text format through the word-level HF tokenizer: prompt, then " chosen EOS" / " rejected EOS"."""
    from datasets import Dataset
    from engine.tokenizer import EOS

    rows = {"prompt": [], "chosen": [], "rejected": []}
    for p, c, r in triples:
        if not c or not r or c == r:
            continue
        rows["prompt"].append(tokenizer.ids_to_text(p))
        rows["chosen"].append(" " + tokenizer.ids_to_text(c) + " " + EOS)
        rows["rejected"].append(" " + tokenizer.ids_to_text(r) + " " + EOS)
    return Dataset.from_dict(rows)


class _Progress:
    """What a `tune()` reports while it runs: every step record goes to its `on_event` (with `steps_total`
    once known), and `should_stop()` ends the run at the next step boundary (DPO: the events callback
    below; GRPO: `run_grpo`'s own should_stop)."""

    def __init__(self, on_event: Callable[[dict], None] | None, should_stop: Callable[[], bool] | None):
        self.on_event = on_event
        self.should_stop = should_stop or (lambda: False)
        self.steps_done = 0
        self.steps_total: int | None = None
        self.stopped = False

    def stop_requested(self) -> bool:
        if self.should_stop():
            self.stopped = True
        return self.stopped

    def phase(self, text: str) -> None:
        """What the tune is doing now, in the musician's words (shown until the next step)."""
        self.emit({"event": "phase", "phase": text})

    def emit(self, event: dict) -> None:
        if isinstance(event.get("step"), int) and "event" not in event:
            self.steps_done = max(self.steps_done, event["step"])
            if self.steps_total is None:
                self.steps_total = event.get("steps_total")
            if self.steps_total is not None:
                event = {**event, "steps_total": self.steps_total}
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception as exc:  # noqa: BLE001 -- a listener must never end the training
                print(f"smart taste tune: on_event failed: {exc}")


class DriftCheck(NamedTuple):
    """What `TuneDrift.step` did at a step: the drift it measured (None: not a measuring step) and the guard's
    event when it fired there."""

    measured: dict | None = None
    fired: dict | None = None


class TuneDrift:
    """A taste tune's drift guard (as GRPO's, `training.rewards.DriftMonitor`): the same probe prompts sampled at
    the same seed by the base model before training and by the policy every `every` steps; the distance
    is the mean over nine musical features of how far the policy's mean moved, in base standard deviations.
    A tune that pleases the taste by breaking what it does not measure (density, note length, key, …)
    shows here."""

    PROBE_SAMPLES = 2  # per prompt

    def __init__(self, tokenizer, prompts: Sequence[Clip | None], config: TuneConfig, every: int):
        from training.guards import DriftGuard
        from training.rewards import DriftMonitor, RolloutAnalyzer

        self.tok, self.prompts, self.config, self.every = tokenizer, list(prompts), config, max(1, every)
        self.analyzer = RolloutAnalyzer(tokenizer)
        self.monitor = DriftMonitor()
        self.guard = DriftGuard(config.max_drift, window=1) if config.max_drift else None
        self.last: dict | None = None
        self.fired: dict | None = None

    def measure(self, model) -> dict:
        from training.rewards import drift_features

        samples = [s for group in sample_continuations(
            model, self.tok, self.prompts, self.PROBE_SAMPLES, bars=self.config.bars,
            temperature=self.config.temperature, top_p=self.config.top_p, seed=self.config.seed + 7919)
            for s in group]
        batch = self.analyzer.batch([self.tok.ids_to_text(s.prompt_ids) for s in samples],
                                    [self.tok.ids_to_text(s.completion_ids) for s in samples],
                                    [s.completion_ids for s in samples])
        obs = self.monitor.observe(drift_features(batch))
        self.last = {"drift": round(obs["distance"], 4),
                     "drift_shifts": {k.split("/", 1)[1]: round(v, 3) for k, v in obs.items() if k.startswith("shift/")},
                     "drift_means": {k.split("/", 1)[1]: round(v, 4) for k, v in obs.items() if k.startswith("mean/")}}
        if self.config.max_drift:
            self.last["drift_threshold"] = self.config.max_drift
        return self.last

    def step(self, step: int, model, last_step: bool) -> DriftCheck:
        """Measure at every `every`-th step and the last (the one place that says which steps are measured);
        the guard fires once."""
        if step % self.every and not last_step:
            return DriftCheck()
        rec = self.measure(model)
        fired = self.guard.observe(step, rec["drift"]) if self.guard is not None else None
        if fired is None:
            return DriftCheck(rec)
        self.fired = {**fired, "action": self.config.drift_action, "shifts": rec["drift_shifts"]}
        return DriftCheck(rec, self.fired)


def _write_events(path: Path, progress: _Progress | None = None, drift: TuneDrift | None = None):
    from transformers import TrainerCallback

    class EventsCallback(TrainerCallback):
        """One JSON line per logged step (loss, reward margins, accuracies, steps_total), as GRPO runs
        write, also sent to the running tune()'s listener; a stop request ends the run after the step."""

        started = time.perf_counter()
        measured: dict | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if drift is not None and kwargs.get("model") is not None:
                check = drift.step(int(state.global_step), kwargs["model"], state.global_step >= state.max_steps)
                self.measured = check.measured  # goes into this step's record (on_log)
                if check.fired is not None:
                    notice = {"event": "guard", "guard": "drift", **check.fired}
                    with open(path, "a") as f:
                        f.write(json.dumps(notice) + "\n")
                    if progress is not None:
                        progress.emit(notice)
                    if drift.config.drift_action == "stop":
                        control.should_training_stop = True
            if progress is not None and progress.stop_requested():
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            rec = {"step": int(state.global_step),
                   **{k.replace("/", "_"): float(v) for k, v in logs.items() if isinstance(v, (int, float))},
                   "steps_total": int(state.max_steps),
                   "elapsed_s": round(time.perf_counter() - self.started, 3)}
            if self.measured is not None:
                rec.update({k: v for k, v in self.measured.items() if k != "drift_means"})
                self.measured = None
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if progress is not None:
                progress.emit(rec)

    return EventsCallback()


def _tune_dpo(config: TuneConfig, pairs: Sequence, out: Path, progress: _Progress) -> dict:
    import torch
    from transformers import Phi3ForCausalLM
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import DPOConfig, DPOTrainer

    from engine.policy import Policy

    progress.phase("reading your picks")
    policy = Policy.load(config.model)
    tok = policy.tokenizer
    triples = []
    for p in pairs:
        if p.choice == "tie":
            continue  # DPO has no tie term; a tie still shapes the taste model
        prompt = load_midi(p.prompt) if p.prompt is not None else None
        triples.append(pair_ids(tok, load_midi(p.chosen), load_midi(p.rejected), prompt))
    n_musician = len(triples)
    t0 = time.perf_counter()
    if config.taste and config.synthetic_prompts:
        progress.phase(f"sampling {config.synthetic_prompts} fresh continuations for your taste model to rank")
        triples += synthetic_pairs(policy.model, tok, TasteScorer(config.taste), _prompt_clips(pairs), config)
    gen_s = time.perf_counter() - t0
    dataset = _dpo_dataset(tok, triples)
    if len(dataset) == 0:
        raise UserError("no decisive pairs to tune on (ties only, or no pairs)")
    steps = config.steps or max(1, math.ceil(2 * len(dataset) / config.batch))
    # The reference model is reloaded from config._name_or_path: the policy must come from its saved directory.
    model = Phi3ForCausalLM.from_pretrained(str(Path(config.model).resolve()), use_safetensors=True,
                                            dtype=torch.float32)
    del policy
    use_cpu = not torch.cuda.is_available()
    args = DPOConfig(
        output_dir=str(out / "dpo"),
        max_steps=steps,
        per_device_train_batch_size=min(config.batch, len(dataset)),
        learning_rate=config.lr,
        lr_scheduler_type="linear",
        beta=0.1 if config.beta is None else config.beta,
        max_length=int(model.config.max_position_embeddings),
        # CPU: no bf16 autocast and no gradient checkpointing (TRL's defaults are for GPUs; far slower here).
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=use_cpu,
        logging_steps=1, report_to="none", save_strategy="no", seed=config.seed, data_seed=config.seed,
        disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,
        # The reference log-probabilities once, before training (the model is then the reference), rather
        # than a second model's forward pass on every step of every epoch.
        precompute_ref_log_probs=True,
    )
    events = out / "events.jsonl"
    drift = None
    if config.max_drift:
        progress.phase("sampling the original model at a few of your prompts (the drift guard's baseline)")
        probe = [p.last_bars(config.prompt_bars) if p is not None and p.notes else None
                 for p in _prompt_clips(pairs)[:8]] or [None] * 8
        drift = TuneDrift(tok, probe, config, every=max(1, steps // 4))
        base_drift = drift.measure(model)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok.hf_tokenizer(),
                         callbacks=[_write_events(events, progress, drift)])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    t1 = time.perf_counter()
    progress.phase("the original model's reference pass, then the first training step")
    trainer.train()
    train_s = time.perf_counter() - t1
    Policy(trainer.accelerator.unwrap_model(trainer.model), tok).save(out)
    shutil.rmtree(out / "dpo", ignore_errors=True)
    info = {"musician_pairs": n_musician, "synthetic_pairs": len(triples) - n_musician, "dpo_examples": len(dataset),
            "steps": steps, "generate_s": round(gen_s, 2), "train_s": round(train_s, 2)}
    if drift is not None:
        info["drift"] = {"base": base_drift["drift_means"], "tuned": (drift.last or {}).get("drift_means"),
                         "distance": (drift.last or {}).get("drift"), "threshold": config.max_drift,
                         "shifts": (drift.last or {}).get("drift_shifts"), "guard": drift.fired}
        if drift.fired is not None and config.drift_action == "stop":
            info["stopped_by"] = "drift_guard"
    return info


def taste_reward(scorer: "TasteScorer"):
    """A GRPO reward (training.rewards convention): the taste score of each completion given its prompt."""

    def reward(prompts, completions, rollouts=None, **kwargs) -> list[float]:
        tok = rollouts.analyzer.tokenizer
        conts, ctxs = [], []
        for p_ids, c_ids in zip(rollouts.prompt_ids, rollouts.completion_ids):
            prompt = tok.decode(p_ids)
            full = tok.decode(list(p_ids) + list(c_ids))
            conts.append(full.with_notes(full.notes[len(prompt.notes):]))
            ctxs.append(prompt if prompt.notes else None)
        scores, _ = scorer.score_many(conts, ctxs)
        return [float(s) for s in scores]

    return reward


def _tune_grpo(config: TuneConfig, pairs: Sequence, out: Path, progress: _Progress) -> dict:
    from engine.music import atomic_write_bytes
    from training.grpo import GRPORunConfig, run_grpo
    from training.rewards import REWARDS, register_reward

    progress.phase("loading the model and sampling the first group of continuations")
    scorer = TasteScorer(config.taste)
    register_reward("taste", taste_reward(scorer))
    prompt_dir = out / "prompts"
    paths = []
    for i, clip in enumerate(c for c in _prompt_clips(pairs) if c is not None and c.notes):
        path = prompt_dir / f"{i:04d}.mid"
        atomic_write_bytes(path, clip.to_midi_bytes())
        paths.append(str(path))
    run = GRPORunConfig.from_preset(
        "paper", model=config.model, out_dir=str(out / "grpo"), steps=config.steps or 20, reward="taste",
        prompts=",".join(paths) if paths else "procedural", prompt_bars=config.prompt_bars,
        prompts_per_step=config.prompts_per_step, group=config.group, max_completion_tokens=config.max_completion_tokens,
        beta=0.04 if config.beta is None else config.beta, lr=config.lr, temperature=config.temperature,
        top_p=config.top_p, min_diversity=config.min_diversity, seed=config.seed, save_every=0,
        tensorboard=False, cpu_threads=config.cpu_threads, device="auto", max_drift=config.max_drift,
        drift_action=config.drift_action)
    progress.steps_total = run.steps
    try:
        result = run_grpo(run, on_event=progress.emit, should_stop=progress.stop_requested)
    finally:  # the taste reward belongs to this run only
        REWARDS.pop("taste", None)
    # OUT is the model: the inner run's final files move up (a second copy would be disk and a confusing folder)
    inner_model = Path(result.final_model)
    for f in inner_model.iterdir():
        shutil.move(f, out / f.name)
    inner_model.rmdir()
    return {"steps": result.steps_done, "stopped_by": result.stopped_by, "reward_first": result.reward_first,
            "reward_last": result.reward_last, "grpo_run": str(out / "grpo")}


def tune(config: TuneConfig, on_event: Callable[[dict], None] | None = None,
         should_stop: Callable[[], bool] | None = None) -> dict:
    """Fine-tune `config.model` toward the taste; OUT becomes a loadable Policy directory.

    `on_event` gets every step record (with `steps_total`) and a final {"event": "done", ...card};
    `should_stop()` is polled after every step: true, the run ends there and OUT holds the model as
    trained so far (the card says `stopped_by: "stopped"` and `steps_done`). A stopped tune cannot be
    continued: run it again to start over."""
    import torch

    from engine.policy import Policy, PolicyLoadError
    from engine.preferences import read_pairs

    config.validate()
    try:
        Policy.load(config.model)
    except PolicyLoadError as exc:
        raise UserError(str(exc)) from None
    try:
        pairs = read_pairs(config.pairs)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    if config.taste:
        TasteModel.load(config.taste).check_ready()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "events.jsonl").unlink(missing_ok=True)
    threads = torch.get_num_threads()
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    t0, cpu0 = time.perf_counter(), time.process_time()
    progress = _Progress(on_event, should_stop)
    try:
        info = (_tune_dpo if config.method == "dpo" else _tune_grpo)(config, pairs, out, progress)
    finally:
        torch.set_num_threads(threads)
    steps_total = progress.steps_total or info.get("steps")
    info.setdefault("stopped_by", "stopped" if progress.stopped and progress.steps_done < (steps_total or 0)
                    else "completed")
    info.update(steps_done=progress.steps_done, steps_total=steps_total)
    # cpu_s: this process's CPU time (with one thread, about the wall time on an idle machine).
    card = {"kind": "smart-taste-tune", "config": asdict(config), "pairs": len(pairs), **info,
            "elapsed_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - cpu0, 2)}
    atomic_write_text(out / "taste_tune.json", json.dumps(card, indent=2))
    if on_event is not None:
        on_event({"event": "done", **card})
    return card
