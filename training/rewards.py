"""Reward functions for SMART fine-tuning (TRL convention: `(prompts, completions, **kwargs) -> list[float]`).

Every reward works on the *music* of a completion: the prompt + completion ids are decoded with one
REMI decoder (so the completion continues the prompt's bar/tempo/time-signature state) and the
notes from the bar in which the completion begins are kept, shifted to start at 0 (`decode_rollout`).
For procedural prompts that is the whole piece; for continuation prompts it is the continuation.

The batch of a training step is analysed once and shared by all reward functions of that step
(`RolloutAnalyzer`): decode → render every completion to its own length, cut at `seconds` and never
padded, in a process pool (`engine.render.RenderPool`) → score all renders with MAA in batches. So `maa-ce=1,maa-pq=0.5`
renders and scores once, and all four MAA axes are logged whatever the reward is.

Built-in rewards (`REWARDS`, extend with `register_reward` or `--reward module:function`):

* `maa-ce`, `maa-cu`, `maa-pc`, `maa-pq` — Meta Audiobox Aesthetics axes of the first 10 s
  (paper §3.3/§3.5 uses `maa-ce`). Scale 1–10.
* `notes` — min(d × 10 s / 100, 1), d = notes per second of the heard music (below), at most
  `MAX_NOTES_PER_ONSET` (4) counted per onset (a note repeated at the same onset and pitch is one
  note: the decoder drops the copies, so stacking duplicates cannot raise it; stacking ever bigger
  chords cannot either). 100 notes in 10 s is denser than the paper's SMART outputs (~70), so the
  reward does not saturate early. Needs no weights: the offline reward for tests and quick runs.

Every reward is over a stretch of *music* — the first `seconds` of the piece — never over the token
budget. A completion that uses its whole budget without ending the piece (EOS) before its music
fills that stretch is **truncated** (`RolloutBatch.truncated`): only its complete bars are heard —
the bar the budget cut is dropped — so every reward, MAA's too, measures those bars as music (the
`notes` density over their duration), never a bar cut short as if it were the whole piece; with no
complete bar it gets the reward's floor (`notes` and `scale-consistency` 0, an MAA axis 1). The
share of truncated completions is logged (`music/truncated_share`). Before this, a run with `notes`
learned to pack notes into fewer bars — 87–100 % of completions ran out of tokens, bars per 256
tokens fell 4.56 → 1.77 and notes per onset rose 1.97 → 2.84: "notes in 10 s" of music that stopped
after two bars was really notes per token (issue 23). Running out of tokens now earns nothing: the
same bars score the same whether the budget cut them or not. Custom rewards see
`rollouts.truncated()` and `rollouts.heard_seconds`.
* `scale-consistency` (old name `scale`, still accepted) — MusPy scale consistency of the notes in
  the first 10 s (0 without notes). Note that a single note is perfectly "in scale": on its own this
  reward favours sparse outputs.

The names, descriptions and which need MAA weights are the API's catalogue (`engine.api.REWARDS`);
spec strings (`maa-ce`, `notes`, `maa-ce=1,maa-pq=0.5`, `pkg.module:function=0.2`) are parsed by
`engine.api.parse_reward_spec`.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from engine.api import MAA_AXES, REWARDS as REWARD_CATALOGUE
from engine.api import parse_reward_spec as parse_spec_grammar
from engine.errors import UserError
from engine.features import diversity, midi_features, window_notes
from engine.music import Clip
from engine.tokenizer import RemiTokenizer

DEFAULT_SECONDS = 10.0
DEFAULT_SAMPLE_RATE = 16000
NOTES_TARGET = 100
# `notes` credits at most this many notes per onset: a chord of four covers a piano voicing; more
# stacked at one onset (the cheapest way to add notes per token) earns nothing more.
MAX_NOTES_PER_ONSET = 4
DIVERSITY_BEATS = 16  # paper Fig. 6 compares the first 16 beats


# ---------------------------------------------------------------------------- decoding
def decode_rollout(tokenizer: RemiTokenizer, prompt_ids: Sequence[int], completion_ids: Sequence[int],
                   ppq: int = 480) -> Clip:
    """The music of a completion: notes from the bar where the completion starts, shifted to tick 0.

    The decoder reads the prompt first, so the completion continues its time signature, tempo and
    position. The origin is the start of the bar in which the completion's first token lands (a
    completion opening with Bar starts a new bar; one opening with a Position/Pitch continues the
    prompt's open bar, whose prompt notes are then kept as part of the heard music).
    """
    dec = tokenizer.decoder(ppq)
    dec.feed_many(prompt_ids)
    origin_tok = dec.bar_tick
    for i, t in enumerate(completion_ids):
        dec.feed(int(t))
        if i == 0:
            origin_tok = dec.bar_tick
    origin = round(origin_tok * dec.scale)
    clip = dec.clip()
    if origin <= 0:
        return clip
    return clip.slice_ticks(origin, max(clip.end_tick, origin) + 1)


# ---------------------------------------------------------------------------- analysed batch
@dataclass
class RolloutBatch:
    """One step's completions, decoded; audio and MAA scores computed on first use and kept."""

    analyzer: "RolloutAnalyzer"
    prompts: list[str]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    clips: list[Clip]  # the heard music: a truncated completion's complete bars only
    cut: list[bool] = field(default_factory=list)  # truncated by the token budget
    heard_seconds: list[float] = field(default_factory=list)  # music the rewards measure (≤ the window)
    _audio: list[np.ndarray] | None = None
    _maa: list[dict] | None = None
    _features: list[dict] | None = None
    timings: dict = field(default_factory=dict)
    logged: set = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.clips)

    def audio(self) -> list[np.ndarray]:
        if self._audio is None:
            self._audio = self.analyzer.render(self.clips, self.timings)
        return self._audio

    def maa(self) -> list[dict]:
        """Per completion {CE, CU, PC, PQ} of the first `seconds` of audio."""
        if self._maa is None:
            self._maa = self.analyzer.score(self.audio(), self.timings)
        return self._maa

    def truncated(self) -> list[bool]:
        """Per completion: it used the whole token budget without ending the piece, before its music filled
        the reward window (only its complete bars are in `clips`)."""
        return list(self.cut) or [False] * len(self.clips)

    def features(self) -> list[dict]:
        if self._features is None:
            self._features = [midi_features(c, window_seconds=self.analyzer.seconds) for c in self.clips]
        return self._features

    def groups(self) -> list[list[int]]:
        """Indices of completions sharing a prompt (a GRPO group, or its part on this process)."""
        by_prompt: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(self.prompts):
            by_prompt[p].append(i)
        return list(by_prompt.values())

    def diversity(self) -> dict:
        """Mean over groups of `engine.features.diversity` of the group's first 16 beats."""
        stats = [diversity([self.clips[i] for i in g], n_beats=DIVERSITY_BEATS) for g in self.groups() if len(g) > 1]
        if not stats:
            return {}
        return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}


class RolloutAnalyzer:
    """Decodes, renders and scores the completions of a step once for every reward function.

    `scorer` is an `engine.scorer.MAAScorer` (or anything with `.score(audios, sample_rate)`); it is
    loaded lazily by `scorer_factory` when an MAA reward first needs it, so offline rewards never
    touch MAA weights. `processes`: render pool size (None = render module default).
    """

    def __init__(self, tokenizer: RemiTokenizer, *, seconds: float = DEFAULT_SECONDS,
                 sample_rate: int = DEFAULT_SAMPLE_RATE, soundfont: str | None = None,
                 scorer=None, scorer_factory: Callable[[], object] | None = None, processes: int | None = None,
                 ppq: int = 480, max_completion_tokens: int | None = None):
        self.tokenizer = tokenizer
        self.seconds = seconds
        self.max_completion_tokens = max_completion_tokens  # the rollouts' token budget (truncation)
        self.drift = DriftMonitor()
        self.sample_rate = sample_rate
        self.soundfont = soundfont
        self._scorer = scorer
        self._scorer_factory = scorer_factory
        self.processes = processes
        self.ppq = ppq
        self._last_key = None
        self._last: RolloutBatch | None = None
        self.scorer_is_random = False
        self._pool = None

    # -- the pieces (also used by evaluation)
    @property
    def scorer(self):
        if self._scorer is None:
            if self._scorer_factory is None:
                raise UserError("an MAA reward needs MAA weights (--maa PATH)")
            self._scorer = self._scorer_factory()
        self.scorer_is_random = bool(getattr(self._scorer, "is_random", False))
        return self._scorer

    def render(self, clips: Sequence[Clip], timings: dict | None = None) -> list[np.ndarray]:
        """Every clip rendered to its own length, cut at `seconds` and never padded (MAA would hear the
        padding as content; the paper crops to 10 s), in a persistent worker pool (kept across steps)."""
        import time

        from engine.render import RenderPool, render

        t0 = time.perf_counter()
        clips = list(clips)
        processes = self.processes if self.processes is not None else (os.cpu_count() or 1)
        if processes <= 1 or len(clips) <= 1:
            audio = [render(c, self.sample_rate, soundfont=self.soundfont, max_seconds=self.seconds) for c in clips]
        else:
            if self._pool is None:
                self._pool = RenderPool(self.soundfont, processes)
            audio = self._pool.render(clips, sample_rate=self.sample_rate, max_seconds=self.seconds)
        if timings is not None:
            timings["render_s"] = timings.get("render_s", 0.0) + time.perf_counter() - t0
        return list(audio)

    def close(self) -> None:
        """Stop the render workers (a new pool starts on the next render)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def score(self, audio: Sequence[np.ndarray], timings: dict | None = None) -> list[dict]:
        import time

        t0 = time.perf_counter()
        scores = self.scorer.score(list(audio), self.sample_rate)
        out = [s.as_dict() if hasattr(s, "as_dict") else dict(s) for s in scores]
        if timings is not None:
            timings["score_s"] = timings.get("score_s", 0.0) + time.perf_counter() - t0
        return out

    def heard_music(self, completion_ids: Sequence[int], clip: Clip) -> tuple[Clip, bool, float]:
        """(the music the rewards hear, truncated?, its seconds within the window) of one completion.

        Truncated: the budget ran out (no EOS) before the music filled the window; the bar holding its
        last note is the one the budget cut, so the music heard ends on that bar's line."""
        cap = self.max_completion_tokens
        used_all = cap is not None and len(completion_ids) >= cap and (
            not completion_ids or completion_ids[-1] != self.tokenizer.eos_id)
        end_s = clip.seconds_at(clip.end_tick) if clip.notes else 0.0
        if not used_all or end_s >= self.seconds:
            return clip, False, self.seconds
        if not clip.notes:
            return clip, True, 0.0
        cut_tick = clip.bar_tick(clip.bar_index_at(max(n.start for n in clip.notes)))
        heard = clip.slice_ticks(0, cut_tick) if cut_tick > 0 else clip.with_notes([])
        return heard, True, min(self.seconds, clip.seconds_at(cut_tick))

    # -- per-step batch, shared by all reward functions of the step
    def batch(self, prompts: Sequence[str], completions: Sequence, completion_ids: Sequence[Sequence[int]] | None = None,
              log_metric: Callable[[str, float], None] | None = None) -> RolloutBatch:
        key = (tuple(prompts), tuple(str(c) for c in completions))
        if self._last is not None and self._last_key == key:
            return self._last
        tok = self.tokenizer
        prompt_ids = [tok.text_to_ids(p) for p in prompts]
        if completion_ids is None:
            completion_ids = [tok.text_to_ids(str(c)) for c in completions]
        # Drop trailing EOS/PAD: they end the piece, they are not music.
        comp = [[int(t) for t in ids if int(t) not in (tok.pad_id,)] for ids in completion_ids]
        clips = [decode_rollout(tok, p, c, self.ppq) for p, c in zip(prompt_ids, comp)]
        heard = [self.heard_music(ids, clip) for ids, clip in zip(comp, clips)]
        batch = RolloutBatch(self, list(prompts), prompt_ids, comp, [h[0] for h in heard],
                             cut=[h[1] for h in heard], heard_seconds=[h[2] for h in heard])
        self._last_key, self._last = key, batch
        if log_metric is not None:
            self._log_symbolic(batch, log_metric)
        return batch

    def _log_symbolic(self, batch: RolloutBatch, log_metric) -> None:
        feats = batch.features()
        log_metric("music/notes_10s", float(np.mean([f["n_notes"] for f in feats])))
        log_metric("music/empty_beat_rate", float(np.mean([f["empty_beat_rate"] for f in feats])))
        log_metric("music/silent_fraction", float(np.mean([f["n_notes"] == 0 for f in feats])))
        log_metric("music/truncated_share", float(np.mean(batch.truncated())))
        for k, v in self.drift.observe(drift_features(batch)).items():
            log_metric(f"drift/{k}", v)
        for k, v in batch.diversity().items():
            log_metric(f"diversity/{k}", v)

    def log_maa(self, batch: RolloutBatch, log_metric) -> None:
        if log_metric is None or "maa" in batch.logged:
            return
        batch.logged.add("maa")
        scores = batch.maa()
        for axis in MAA_AXES:
            log_metric(f"maa/{axis}", float(np.mean([s[axis] for s in scores])))


# ---------------------------------------------------------------------------- drift from the base model
DRIFT_FEATURES = ("log_notes", "polyphony_rate", "pitch_range", "notes_per_onset", "bars_per_100_tokens",
                  "mean_log2_length", "in_key", "duplicates_emitted", "truncated")


def drift_features(batch: RolloutBatch) -> dict[str, list[float]]:
    """Per completion, what its music is like — the features a reward can be gamed through: density,
    the paper's polyphony and pitch range, notes per onset, bars per token, note length, in-key share
    (against the key Krumhansl–Schmuckler finds in the completion itself), duplicate notes the model
    wrote (then dropped by the decoder), and truncation."""
    from training.continuation_bench import estimate_key, in_key_share

    tok = batch.analyzer.tokenizer
    pitch_ids = set(int(i) for i in tok.kind_ids["Pitch"])
    out: dict[str, list[float]] = {k: [] for k in DRIFT_FEATURES}
    for f, clip, ids, cut in zip(batch.features(), batch.clips, batch.completion_ids, batch.truncated()):
        notes = clip.notes
        onsets = len({n.start for n in notes})
        written = sum(1 for t in ids if t in pitch_ids)
        bars = sum(1 for t in ids if t == tok.bar_id)
        out["log_notes"].append(float(np.log2(1 + f["n_notes"])))
        out["polyphony_rate"].append(float(f["polyphony_rate"]))
        out["pitch_range"].append(float(f["pitch_range"]))
        out["notes_per_onset"].append(len(notes) / onsets if onsets else 0.0)
        out["bars_per_100_tokens"].append(100.0 * bars / max(1, len(ids)))
        out["mean_log2_length"].append(float(np.mean([np.log2(max(n.duration, 1) / clip.ppq) for n in notes]))
                                       if notes else 0.0)
        out["in_key"].append(in_key_share(notes, estimate_key(notes)) if notes else 0.0)
        out["duplicates_emitted"].append(max(0, written - len(notes)) / max(1, written))
        out["truncated"].append(float(cut))
    return out


class DriftMonitor:
    """How far a run's samples have moved from the base model's, step by step (issue 23's guard).

    The first batch it sees is the base model's (step 1 is generated before any update): its per-feature
    means and standard deviations are the baseline. Each later batch's distance is the mean over
    features of |mean − base mean| / base std (a std floor keeps a feature the base never varies from
    dominating). One number a run can be stopped on, plus every feature's mean to show why.
    """

    STD_FLOOR = {"log_notes": 0.25, "polyphony_rate": 0.05, "pitch_range": 2.0, "notes_per_onset": 0.1,
                 "bars_per_100_tokens": 0.1, "mean_log2_length": 0.25, "in_key": 0.03, "duplicates_emitted": 0.02,
                 "truncated": 0.1}

    def __init__(self):
        self.base_mean: dict[str, float] | None = None
        self.base_std: dict[str, float] | None = None

    def observe(self, values: dict[str, list[float]]) -> dict[str, float]:
        means = {k: float(np.mean(v)) if v else 0.0 for k, v in values.items()}
        if self.base_mean is None:
            self.base_mean = means
            self.base_std = {k: max(float(np.std(values[k])) if values[k] else 0.0, self.STD_FLOOR[k])
                             for k in values}
        shifts = {k: abs(means[k] - self.base_mean[k]) / self.base_std[k] for k in means}
        return {"distance": float(np.mean(list(shifts.values()))), **{f"mean/{k}": v for k, v in means.items()},
                **{f"shift/{k}": v for k, v in shifts.items()}}


# ---------------------------------------------------------------------------- reward callables
class _AnalyzedReward:
    """Base: a TRL reward callable that reads the step's shared `RolloutBatch`; a truncated completion
    without one complete bar gets `floor`, the bottom of the reward's scale."""

    floor = 0.0

    def __init__(self, analyzer: RolloutAnalyzer, name: str):
        self.analyzer = analyzer
        self.__name__ = name  # TRL logs rewards/<__name__>/mean

    def __call__(self, prompts, completions, completion_ids=None, log_metric=None, **kwargs) -> list[float]:
        batch = self.analyzer.batch(prompts, completions, completion_ids, log_metric)
        return self.floored(batch, self.compute(batch))

    def floored(self, batch: RolloutBatch, values: list[float]) -> list[float]:
        return [self.floor if heard <= 0 else v for v, heard in zip(values, batch.heard_seconds)]

    def compute(self, batch: RolloutBatch) -> list[float]:
        raise NotImplementedError


class MAAReward(_AnalyzedReward):
    floor = 1.0  # MAA axes run from 1 to 10

    def __init__(self, analyzer: RolloutAnalyzer, axis: str):
        if axis not in MAA_AXES:
            raise ValueError(f"unknown MAA axis {axis}")
        super().__init__(analyzer, f"maa_{axis.lower()}")
        self.axis = axis
        self.log_metric = None

    def __call__(self, prompts, completions, completion_ids=None, log_metric=None, **kwargs) -> list[float]:
        batch = self.analyzer.batch(prompts, completions, completion_ids, log_metric)
        values = [float(s[self.axis]) for s in batch.maa()]
        self.analyzer.log_maa(batch, log_metric)
        return self.floored(batch, values)


class NotesReward(_AnalyzedReward):
    def __init__(self, analyzer: RolloutAnalyzer, target: int = NOTES_TARGET):
        super().__init__(analyzer, "notes")
        self.target = target

    def compute(self, batch: RolloutBatch) -> list[float]:
        window = self.analyzer.seconds
        return [min(capped_note_count(c, heard) / heard * window / self.target, 1.0) if heard > 0 else 0.0
                for c, heard in zip(batch.clips, batch.heard_seconds)]


class ScaleReward(_AnalyzedReward):
    def __init__(self, analyzer: RolloutAnalyzer):
        super().__init__(analyzer, "scale_consistency")

    def compute(self, batch: RolloutBatch) -> list[float]:
        return [float(f["scale_consistency"]) for f in batch.features()]


class CustomReward(_AnalyzedReward):
    """Wraps a user function; it receives TRL's arguments plus `rollouts` (the RolloutBatch: `.clips`,
    `.audio()`, `.maa()`, `.features()`) when its signature accepts it or **kwargs."""

    def __init__(self, analyzer: RolloutAnalyzer, func: Callable, name: str):
        super().__init__(analyzer, name)
        self.func = func
        params = inspect.signature(func).parameters
        self._pass_rollouts = "rollouts" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())

    def __call__(self, prompts, completions, completion_ids=None, log_metric=None, **kwargs) -> list[float]:
        batch = self.analyzer.batch(prompts, completions, completion_ids, log_metric)
        extra = {"rollouts": batch} if self._pass_rollouts else {}
        values = self.func(prompts=prompts, completions=completions, completion_ids=completion_ids,
                           log_metric=log_metric, **kwargs, **extra)
        values = [None if v is None else float(v) for v in values]
        if len(values) != len(prompts):
            raise ValueError(f"reward {self.__name__} returned {len(values)} values for {len(prompts)} completions")
        if batch._maa is not None:
            self.analyzer.log_maa(batch, log_metric)
        return values


# ---------------------------------------------------------------------------- registry
RewardFactory = Callable[[RolloutAnalyzer], Callable]
REWARDS: dict[str, RewardFactory] = {
    "maa-ce": lambda a: MAAReward(a, "CE"),
    "maa-cu": lambda a: MAAReward(a, "CU"),
    "maa-pc": lambda a: MAAReward(a, "PC"),
    "maa-pq": lambda a: MAAReward(a, "PQ"),
    "notes": lambda a: NotesReward(a),
    "scale-consistency": lambda a: ScaleReward(a),
}
# The catalogue's rewards; `register_reward` adds more at run time (custom and taste rewards).
BUILTIN_REWARDS = frozenset(REWARDS)
NEEDS_MAA = {r.name for r in REWARD_CATALOGUE if r.needs_maa}


def register_reward(name: str, factory: RewardFactory | None = None, *, needs_maa: bool = False):
    """Add a named reward. `factory(analyzer) -> callable`; usable as a decorator on a plain reward
    function `(prompts, completions, **kwargs) -> list[float]` too."""

    def add(obj):
        if inspect.isclass(obj) or _takes_analyzer(obj):
            REWARDS[name] = obj
        else:
            REWARDS[name] = lambda a, _f=obj: CustomReward(a, _f, name.replace("-", "_"))
        if needs_maa:
            NEEDS_MAA.add(name)
        return obj

    return add(factory) if factory is not None else add


def _takes_analyzer(obj) -> bool:
    try:
        params = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return False
    return len(params) == 1 and params[0] in ("analyzer", "a")


@dataclass
class RewardSpec:
    name: str
    weight: float = 1.0


def parse_reward_spec(spec: str) -> list[RewardSpec]:
    """`maa-ce` | `maa-ce=1,maa-pq=0.5` | `module:function=0.3` → [(name, weight)]; old names (`scale`)
    become their current ones."""
    out: list[RewardSpec] = []
    for name, weight in parse_spec_grammar(spec or ""):
        if name not in REWARDS and ":" not in name:
            raise UserError(f"unknown reward {name!r} (choose from {', '.join(sorted(REWARDS))}, or module:function)")
        out.append(RewardSpec(name, weight))
    return out


def needs_maa(specs: Sequence[RewardSpec]) -> bool:
    return any(s.name in NEEDS_MAA for s in specs)


def build_rewards(specs: Sequence[RewardSpec], analyzer: RolloutAnalyzer) -> tuple[list[Callable], list[float]]:
    """Reward callables and their weights (TRL sums weighted rewards, then normalizes per group)."""
    funcs, weights = [], []
    for s in specs:
        if s.name in REWARDS:
            funcs.append(REWARDS[s.name](analyzer))
        else:
            funcs.append(CustomReward(analyzer, load_callable(s.name), s.name.rpartition(":")[2]))
        weights.append(s.weight)
    return funcs, weights


def load_callable(ref: str) -> Callable:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import reward module {module_name!r}: {exc}") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise UserError(f"{ref!r} is not a callable in {module_name}")
    return func


def combined_reward(specs: Sequence[RewardSpec], analyzer: RolloutAnalyzer) -> Callable:
    """One plain callable giving the weighted sum (for users who want a single reward function)."""
    funcs, weights = build_rewards(specs, analyzer)

    def reward(prompts, completions, **kwargs) -> list[float]:
        total = np.zeros(len(prompts))
        for f, w in zip(funcs, weights):
            total += w * np.nan_to_num(np.asarray(f(prompts, completions, **kwargs), dtype=float))
        return total.tolist()

    reward.__name__ = "+".join(s.name for s in specs)
    return reward


def capped_note_count(clip: Clip, seconds: float = DEFAULT_SECONDS, per_onset: int = MAX_NOTES_PER_ONSET) -> int:
    """Distinct notes starting in the first `seconds`, at most `per_onset` of them per onset."""
    per: dict[int, set[int]] = defaultdict(set)
    for n in window_notes(clip, seconds):
        per[n.start].add(n.pitch)
    return sum(min(len(p), per_onset) for p in per.values())
