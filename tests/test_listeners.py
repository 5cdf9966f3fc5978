"""Held-out simulated listeners (`training.listeners`): each hears what its docstring says, mixes
qualities (one alone is not enough), lapses, and never prefers silence."""

from __future__ import annotations

import random

import pytest

from engine.music import Clip, Note
from training.listeners import HELD_OUT_LISTENERS, calibrate, key_scale

PPQ = 480
C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def prompt_with_motif() -> Clip:
    """4 bars of C major: the motif C-D-E-C (intervals +2 +2 -4) four times."""
    notes = [Note(i * PPQ, p + 12 * (i // 16 % 2 == 2), PPQ, 80) for i, p in enumerate([60, 62, 64, 60] * 4)]
    return Clip(notes, PPQ)


def after(prompt: Clip, pitches: list[int], step: int = PPQ, offset: int = 0, length: int = PPQ) -> Clip:
    start = prompt.end_tick
    return prompt.with_notes([Note(start + offset + i * step, p, length, 80) for i, p in enumerate(pitches)])


def test_motif_return_hears_a_motif_come_back():
    p = prompt_with_motif()
    motif = after(p, [65, 67, 69, 65] * 2)  # the prompt's shape, a fourth higher: the same intervals
    wander = after(p, [60, 71, 63, 76, 58, 69, 61, 74])
    listener = HELD_OUT_LISTENERS["motif-return"]
    assert listener.probability(motif, wander, p) > 0.9
    thin = after(p, [60, 62])  # too few notes to carry a motif
    assert listener.utility(thin, p) < listener.utility(wander, p)


def test_the_singer_wants_steps_within_an_octave_near_one_note_per_beat():
    p = prompt_with_motif()
    singer = HELD_OUT_LISTENERS["singer"]
    line = after(p, [64, 65, 67, 65, 64, 62, 60, 62])
    leaps = after(p, [48, 72, 50, 79, 45, 81, 47, 84])
    rushed = after(p, [64, 65, 67, 65, 64, 62, 60, 62] * 4, step=PPQ // 4, length=PPQ // 4)  # 4 per beat
    assert singer.probability(line, leaps, p) > 0.9
    assert singer.probability(line, rushed, p) > 0.75  # the same steps, far too fast: a mixed quality


def test_grounded_groove_wants_key_and_beat_together():
    p = prompt_with_motif()
    assert list(key_scale(p).nonzero()[0]) == [0, 2, 4, 5, 7, 9, 11]  # C major
    groove = HELD_OUT_LISTENERS["grounded-groove"]
    both = after(p, C_MAJOR)
    in_key_off_beat = after(p, C_MAJOR, offset=PPQ // 3)
    on_beat_out_of_key = after(p, [61, 63, 66, 68, 70, 61, 63, 66])
    assert groove.probability(both, in_key_off_beat, p) > 0.9
    assert groove.probability(both, on_beat_out_of_key, p) > 0.9
    # Out of key, being on the beat buys almost nothing (the qualities multiply).
    gain_on_beat_in_key = groove.utility(both, p) - groove.utility(in_key_off_beat, p)
    gain_on_beat_out_of_key = (groove.utility(on_beat_out_of_key, p)
                               - groove.utility(after(p, [61, 63, 66, 68, 70, 61, 63, 66], offset=PPQ // 3), p))
    assert gain_on_beat_out_of_key < 0.2 * gain_on_beat_in_key


@pytest.mark.parametrize("name", sorted(HELD_OUT_LISTENERS))
def test_listeners_lapse_and_never_prefer_silence(name):
    listener = HELD_OUT_LISTENERS[name]
    p = prompt_with_motif()
    good, bad = after(p, [65, 67, 69, 65] * 2), after(p, [30, 100, 31, 99], step=PPQ // 3)
    assert listener.probability(p.with_notes([]), good, p) == 0.0  # nothing added: silence
    q = listener.probability(good, bad, p)
    assert listener.lapse / 2 - 1e-9 <= q <= 1 - listener.lapse / 2 + 1e-9  # a share of picks is random
    rng = random.Random(0)
    picks = [listener.choose(good, good, p, rng) for _ in range(400)]
    assert 0.4 < picks.count("A") / 400 < 0.6


def test_calibration_scales_the_median_difference_to_two():
    p = prompt_with_motif()
    rng = random.Random(1)
    pairs = [(p, after(p, [rng.choice([60, 62, 64]) for _ in range(8)]),
              after(p, [rng.randint(48, 84) for _ in range(8)], offset=rng.choice([0, PPQ // 2]))) for _ in range(20)]
    gains = calibrate(pairs)
    assert set(gains) == set(HELD_OUT_LISTENERS) and all(g > 0 for g in gains.values())
    for name, gain in gains.items():  # the median |Δ utility| at that gain is 2
        m = HELD_OUT_LISTENERS[name].measure
        diffs = sorted(abs(m(a, q) - m(b, q)) * gain for q, a, b in pairs)
        assert (diffs[9] + diffs[10]) / 2 == pytest.approx(2.0)
