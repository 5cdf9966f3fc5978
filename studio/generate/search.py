"""Reward-guided search: grow K beams one bar at a time through the host, keep the best K.

Each step asks the host for `expansions` one-bar continuations of every beam (prompt = the sketch
before the continuation point + that beam's bars; the K requests run concurrently and the host
decodes them in one batch), scores each extended beam with the reward, and keeps the best K.
It stops after the requested bars or when the time budget is spent (the best beams so far are the
result). Rewards: an MAA axis (the host renders and scores the beam's music), an offline one from
the paper's symbolic features (engine.features), for hosts without MAA weights, or the musician's taste
(a ready `engine.taste` model, scoring the beam's notes given the sketch before them) — alone or mixed
half and half with MAA CE. The mix adds the two rewards standardized over each step's beams: only
their order there decides which beams are kept, and neither scale (log-odds, 1–10) swamps the other.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from engine.api import MAA_AXES
from engine.features import midi_features
from engine.host_client import HostClient
from engine.music import Clip, Note, dedupe_notes

MAA_REWARDS = MAA_AXES  # each MAA axis is a search reward
OFFLINE_REWARDS = {
    # Not training's `scale-consistency` reward: this one also penalises empty beats (see offline_reward).
    "in-scale": "In scale, few empty beats (offline)",
    "density": "Note density ≈ sketch (offline)",
    "variety": "Pitch variety (offline)",
}
TASTE_REWARD = "taste"
TASTE_MIX = {"taste+CE": "CE"}  # taste mixed with an MAA axis (needs MAA)
TASTE_REWARDS = {TASTE_REWARD: "Your taste", "taste+CE": "Your taste + MAA CE (half each)"}
TASTE_MIX_WEIGHT = 0.5
# Names the studio once saved (settings, project histories), read as today's.
OLD_REWARD_NAMES = {"scale": "in-scale"}


def reward_name(name: str) -> str:
    """Today's name of a search reward read from settings or a project file."""
    return OLD_REWARD_NAMES.get(name, name)


def reward_label(name: str) -> str:
    name = reward_name(name)
    if name in MAA_REWARDS:
        return f"MAA {name}"
    return OFFLINE_REWARDS.get(name) or TASTE_REWARDS.get(name, name)


def _standardized(values: list[float]) -> list[float]:
    finite = [v for v in values if v != float("-inf")]
    if len(finite) < 2:
        return [0.0 if v != float("-inf") else v for v in values]
    mean = sum(finite) / len(finite)
    sd = (sum((v - mean) ** 2 for v in finite) / len(finite)) ** 0.5 or 1.0
    return [(v - mean) / sd if v != float("-inf") else v for v in values]


def offline_reward(name: str, beam: Clip, context: Clip) -> float:
    """Higher is better. `beam` holds only the generated notes; `context` the sketch before them."""
    f = midi_features(beam)
    if not beam.notes:
        return -1.0
    if name == "in-scale":
        return float(f["scale_consistency"]) - 0.5 * float(f["empty_beat_rate"])
    if name == "density":
        def density(c: Clip) -> float:
            span = max(c.end_tick - (c.notes[0].start if c.notes else 0), c.ppq)
            return len(c.notes) / (span / c.ppq)

        target = density(context) if context.notes else 2.0
        return -abs(density(beam) - target) / max(target, 0.5) - 0.5 * float(f["empty_beat_rate"])
    if name == "variety":
        pcs = {n.pitch % 12 for n in beam.notes}
        return len(pcs) / 12.0 + 0.2 * float(f["scale_consistency"]) - 0.5 * float(f["empty_beat_rate"])
    raise ValueError(f"unknown reward {name!r}")


@dataclass
class Beam:
    notes: list[Note] = field(default_factory=list)
    reward: float | None = None
    scores: dict | None = None  # MAA scores of the beam's music, when scored with MAA
    taste: float | None = None  # the musician's taste score, when searching by taste

    def key(self) -> tuple:
        return tuple(sorted((n.start, n.pitch, n.duration) for n in self.notes))


@dataclass
class SearchResult:
    beams: list[Beam]
    steps_done: int
    bars_wanted: int
    stopped_by: str  # "bars", "budget", "cancelled"
    requests: int
    elapsed_s: float


def beam_search(client: HostClient, clip: Clip, at_tick: int, *, bars: int, beams: int, expansions: int,
                reward: str, budget_s: float, temperature: float = 1.0, top_p: float = 0.95,
                allowed_pitches: list[int] | None = None, seed: int | None = None,
                taste: Callable[[Clip, Clip | None], float] | None = None,
                should_stop: Callable[[], bool] = lambda: False,
                on_step: Callable[[int, list[Beam]], None] | None = None) -> SearchResult:
    """Search `bars` bars after `at_tick` in `clip`. Raises HostError for host failures. `taste(beam_music,
    prompt)` scores a beam for the taste rewards (higher: more to the musician's taste)."""
    t0 = time.monotonic()
    deadline = t0 + max(0.5, budget_s)
    context_notes = [n for n in clip.notes if n.start < at_tick]
    context = clip.with_notes(context_notes)
    first_bar = clip.bar_index_at(at_tick)
    current = [Beam()]
    steps = 0
    requests = 0
    stopped_by = "bars"
    use_taste = reward in TASTE_REWARDS
    if use_taste and taste is None:
        raise ValueError(f"the {reward!r} reward needs a ready taste model")
    maa_axis = reward if reward in MAA_REWARDS else TASTE_MIX.get(reward)
    use_maa = maa_axis is not None
    prompt = context if context_notes else None

    def expand(args) -> list[list[Note]]:
        beam, step, k, count = args
        start = at_tick if step == 0 else clip.bar_tick(first_bar + step)
        prompt = clip.with_notes(dedupe_notes(context_notes + beam.notes))
        stream = client.generate(prompt.to_midi_bytes(), candidates=count, bars=1, temperature=temperature,
                                 top_p=top_p, at_tick=start, allowed_pitches=allowed_pitches,
                                 seed=None if seed is None else (seed * 1009 + step * 31 + k) % (2**31),
                                 score=False)
        with stream:
            result = stream.wait()
        from engine.host_client import decode_midi

        return [decode_midi(c.midi).notes for c in result.candidates]

    def score(beam: Beam) -> Beam:
        music = clip.with_notes(beam.notes)
        if not beam.notes and (use_maa or use_taste):
            beam.reward = float("-inf")
            return beam
        if use_maa:
            r = client.score_midi(music.to_midi_bytes())
            beam.scores = r.axes()
            beam.reward = beam.scores[maa_axis]
        if use_taste:
            beam.taste = float(taste(music, prompt))
            beam.reward = beam.taste
        if not (use_maa or use_taste):
            beam.reward = offline_reward(reward, music, context)
        return beam

    with ThreadPoolExecutor(max_workers=max(1, beams)) as pool:
        for step in range(bars):
            if should_stop():
                stopped_by = "cancelled"
                break
            if time.monotonic() >= deadline:
                stopped_by = "budget"
                break
            # The first step has one parent (the sketch): ask it for enough options to fill all beams.
            count = expansions if len(current) > 1 else min(16, beams * expansions)
            expanded = list(pool.map(expand, [(b, step, k, count) for k, b in enumerate(current)]))
            requests += len(current)
            children: list[Beam] = []
            seen = set()
            for parent, options in zip(current, expanded):
                for new_notes in options:
                    child = Beam(dedupe_notes(parent.notes + new_notes))
                    if child.key() in seen:
                        continue
                    seen.add(child.key())
                    children.append(child)
            if should_stop():
                stopped_by = "cancelled"
                break
            scored = list(pool.map(score, children))
            if reward in TASTE_MIX:
                mixed = [TASTE_MIX_WEIGHT * t + (1 - TASTE_MIX_WEIGHT) * m for t, m in zip(
                    _standardized([b.taste if b.notes else float("-inf") for b in scored]),
                    _standardized([b.scores[maa_axis] if b.scores else float("-inf") for b in scored]))]
                for b, r in zip(scored, mixed):
                    b.reward = r
            if use_maa:
                requests += len(children)
            scored.sort(key=lambda b: b.reward if b.reward is not None else float("-inf"), reverse=True)
            current = scored[:beams] or current
            steps += 1
            if on_step is not None:
                on_step(steps, current)
    return SearchResult(current, steps, bars, stopped_by, requests, time.monotonic() - t0)
