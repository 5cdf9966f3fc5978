"""Held-out simulated listeners: tastes that are no single feature of the taste model.

`training.taste.LISTENERS` each prefer one quality, and three of those qualities are taste-model features,
so a Bradley–Terry fit on them is exactly well specified and flatters itself. These listeners are kept
apart from every choice made while building the taste model (its features, its Laplace prior), and their
tastes mix several musical qualities nonlinearly, as a person's would:

* `motif-return` likes a melody whose shapes come back: the share of the top voice's interval 3-grams
  that were heard before (in the prompt's last bars or earlier in the continuation), and dislikes
  continuations too thin to carry a motif.
* `singer` likes a line one could sing: mostly steps, within about an octave, near one onset per beat.
* `grounded-groove` likes notes in the prompt's key *and* on the beat together (one without the other
  counts for little).

Each picks with Bradley–Terry noise and a lapse rate (a share of picks made at random: attention
wanders). Gains make the median utility difference between two 2-bar continuations by the shipped model
about 2, as for the feature listeners (measured on the same 40 base pairs; BENCHMARKS.md). Their numbers
are never a person's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np

from engine.music import Clip
from engine.taste import continuation_span, top_voice

# Krumhansl–Kessler key profiles (C major, C minor), rotated per tonic.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR_SCALE = np.array([0, 2, 3, 5, 7, 8, 10])


def _key_profiles() -> tuple[np.ndarray, np.ndarray]:
    """(24 z-scored profiles [24, 12], their scales as bool [24, 12]): 12 major keys, then 12 minor."""
    profiles, scales = [], []
    for profile, steps in ((_MAJOR, _MAJOR_SCALE), (_MINOR, _MINOR_SCALE)):
        for tonic in range(12):
            p = np.roll(profile, tonic)
            profiles.append((p - p.mean()) / p.std())
            scale = np.zeros(12, dtype=bool)
            scale[(steps + tonic) % 12] = True
            scales.append(scale)
    return np.array(profiles), np.array(scales)


_PROFILES, _SCALES = _key_profiles()


def key_scale(clip: Clip) -> np.ndarray:
    """bool[12]: the scale of the key that best fits the clip's duration-weighted pitch classes
    (Krumhansl–Kessler correlation; C major when the clip says nothing)."""
    hist = np.zeros(12)
    for n in clip.notes:
        hist[n.pitch % 12] += n.duration
    if hist.std() == 0:
        return _SCALES[0].copy()
    return _SCALES[int(np.argmax(_PROFILES @ ((hist - hist.mean()) / hist.std())))].copy()


def _contour(intervals: np.ndarray) -> np.ndarray:
    """Interval classes a listener hears as a melody's shape: big leap down, step down, repeat, up, big up."""
    return np.digitize(intervals, [-4.5, -0.5, 0.5, 4.5]) - 2


def motif_return(continuation: Clip, prompt: Clip | None) -> float:
    clip, _ = continuation_span(continuation, prompt)
    _, top = top_voice(clip)
    if len(top) < 4:
        return -1.0  # too thin to carry a motif
    intervals = np.diff(top)
    prior = np.diff(top_voice(prompt.last_bars(4))[1]) if prompt is not None and prompt.notes else np.array([])
    score = 0.0
    # Exact interval 3-grams that come back count fully; contour 3-grams (the same shape, other
    # intervals) half: a varied return is still a return.
    for weight, seq, before in ((1.0, intervals, prior), (0.5, _contour(intervals), _contour(prior))):
        heard = {tuple(before[i:i + 3]) for i in range(len(before) - 2)}
        grams = [tuple(seq[i:i + 3]) for i in range(len(seq) - 2)]
        returned = 0
        for g in grams:
            returned += g in heard
            heard.add(g)
        score += weight * returned / max(1, len(grams))
    return score


def singability(continuation: Clip, prompt: Clip | None) -> float:
    clip, beats = continuation_span(continuation, prompt)
    onsets, top = top_voice(clip)
    if len(top) < 2:
        return -1.0
    steps = float(np.mean(np.abs(np.diff(top)) <= 2))
    over_octave = max(0.0, float(top.max() - top.min()) - 12.0)
    rate = math.log2(len(onsets) / max(beats, 1.0))
    return 2.0 * steps - 0.1 * over_octave - 0.6 * rate ** 2


def grounded_groove(continuation: Clip, prompt: Clip | None) -> float:
    clip, _ = continuation_span(continuation, prompt)
    if not clip.notes:
        return -1.0
    scale = key_scale(prompt.last_bars(4) if prompt is not None and prompt.notes else clip)
    in_key = float(np.mean([scale[n.pitch % 12] for n in clip.notes]))
    on_beat = float(np.mean([n.start % clip.ppq == 0 for n in clip.notes]))
    return in_key ** 3 * (0.3 + on_beat)  # both together; either alone counts for little


@dataclass(frozen=True)
class HeldOutListener:
    """P(a ≻ b) = lapse / 2 + (1 − lapse) · σ(gain · (u(a) − u(b))); silence is never preferred."""

    name: str
    measure: Callable[[Clip, Clip | None], float]
    gain: float
    lapse: float = 0.1

    def utility(self, continuation: Clip, prompt: Clip | None = None) -> float:
        if not continuation_span(continuation, prompt)[0].notes:
            return -1e6
        return self.gain * self.measure(continuation, prompt)

    def probability(self, a: Clip, b: Clip, prompt: Clip | None = None) -> float:
        ua, ub = self.utility(a, prompt), self.utility(b, prompt)
        if ua <= -1e6 or ub <= -1e6:
            return 1.0 if ub < ua else 0.0 if ua < ub else 0.5
        diff = max(min(ua - ub, 50.0), -50.0)
        return self.lapse / 2 + (1 - self.lapse) / (1.0 + math.exp(-diff))

    def choose(self, a: Clip, b: Clip, prompt: Clip | None, rng: random.Random) -> str:
        return "A" if rng.random() < self.probability(a, b, prompt) else "B"


# Gains: 2 / the median |Δ measure| over 40 pairs of 2-bar continuations by the shipped model at 4-bar
# POP909 prompts (`calibrate`; measured 2026-12-07: medians 0.056, 1.21 and 0.084).
HELD_OUT_LISTENERS: dict[str, HeldOutListener] = {
    "motif-return": HeldOutListener("motif-return", motif_return, 36.0),
    "singer": HeldOutListener("singer", singability, 1.66),
    "grounded-groove": HeldOutListener("grounded-groove", grounded_groove, 23.8),
}


def calibrate(pairs: list[tuple[Clip, Clip, Clip]]) -> dict[str, float]:
    """The gain for each measure that makes the median |Δ measure| over (prompt, a, b) pairs equal 2."""
    out = {}
    for name, listener in HELD_OUT_LISTENERS.items():
        diffs = [abs(listener.measure(a, p) - listener.measure(b, p)) for p, a, b in pairs]
        med = float(np.median(diffs)) if diffs else 0.0
        out[name] = 2.0 / med if med > 0 else float("nan")
    return out
