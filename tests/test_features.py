"""engine.features against hand-computed examples and a brute-force MusPy-style reference."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from engine.features import (
    FEATURE_NAMES,
    VELOCITY_BIN_EDGES,
    average_piano_roll,
    diversity,
    empty_beat_rate,
    midi_features,
    piano_roll,
    polyphony_rate,
    scale_consistency,
    window_notes,
)
from engine.music import Clip, Note, TempoChange, TimeSignature


def clip(notes, ppq=4, **kw) -> Clip:
    return Clip([Note(*n) for n in notes], ppq, **kw)


# ------------------------------------------------------------------ hand-computed features
def test_polyphony_rate_hand_example():
    # Pitches sounding per tick: 0–3: 1, 4–7: 2, 8–9: 1, 10–11: 2 → 6 of 12 ticks have ≥ 2,
    # none has 3 (MusPy's default counts steps with more than 2 pitches).
    c = clip([(0, 60, 8), (4, 64, 8), (10, 67, 2)])
    assert polyphony_rate(c) == 0.0
    assert midi_features(c)["polyphony_rate"] == 0.0
    assert polyphony_rate(c, threshold=1) == pytest.approx(0.5)
    assert polyphony_rate(c, threshold=0) == pytest.approx(1.0)
    # A triad over ticks 4–7 of 12: 4 steps with three pitches.
    triad = clip([(0, 60, 12), (4, 64, 4), (4, 67, 4)])
    assert polyphony_rate(triad) == pytest.approx(4 / 12)
    assert midi_features(triad)["polyphony_rate"] == pytest.approx(4 / 12)


def test_polyphony_counts_a_doubled_pitch_once():
    # Two overlapping notes on one pitch are one sounding pitch in a binary roll.
    assert polyphony_rate(clip([(0, 60, 8), (4, 60, 8)]), threshold=1) == 0.0
    # A second pitch over ticks 6–9 of the 12: polyphonic there only.
    assert polyphony_rate(clip([(0, 60, 8), (4, 60, 8), (6, 72, 4)]), threshold=1) == pytest.approx(4 / 12)
    assert polyphony_rate(clip([(0, 60, 8), (4, 60, 8), (6, 72, 4)])) == 0.0


def test_empty_beat_rate_hand_example():
    # length 14, ppq 4 → 14 // 4 + 1 = 4 beats; notes mark beats 0 and 3 → 2 of 4 empty.
    assert empty_beat_rate(clip([(0, 60, 2), (12, 62, 2)])) == pytest.approx(0.5)
    # MusPy marks start//res .. end//res inclusive: a note ending on a beat line marks the next.
    assert empty_beat_rate(clip([(0, 60, 4)])) == 0.0  # 2 beats, both marked
    # A long note marks every beat it spans: length 31 → 8 beats; beats 0–4 and 7 marked.
    assert empty_beat_rate(clip([(0, 60, 17), (30, 60, 1)])) == pytest.approx(2 / 8)


def test_empty_beat_rate_in_six_eight_uses_quarter_beats():
    six_eight = [TimeSignature(0, 6, 8)]
    # Eighth notes on each dotted-quarter pulse at ppq 480: length 1680 → 4 quarter beats;
    # the note at 720 ends at 960 and marks beats 1 and 2 → no empty beat.
    pulses = clip([(0, 60, 240), (720, 62, 240), (1440, 64, 240)], ppq=480, time_signatures=six_eight)
    assert empty_beat_rate(pulses) == 0.0
    # Only the first and last pulse: beats 1 and 2 are empty.
    sparse = [(0, 60, 240), (1440, 64, 240)]
    six = clip(sparse, ppq=480, time_signatures=six_eight)
    assert empty_beat_rate(six) == pytest.approx(0.5)
    assert midi_features(six) == midi_features(clip(sparse, ppq=480))


def test_scale_consistency_hand_examples():
    # C, E, G, F#: all in G major.
    assert scale_consistency(clip([(0, 60, 1), (0, 64, 1), (0, 67, 1), (0, 66, 1)])) == 1.0
    # C, C#, D, D#: no diatonic scale holds three consecutive semitones; C# major holds 3.
    assert scale_consistency(clip([(i, 60 + i, 1) for i in range(4)])) == pytest.approx(0.75)
    # All twelve pitch classes once: every scale holds 7.
    assert scale_consistency(clip([(i, 48 + i, 1) for i in range(12)])) == pytest.approx(7 / 12)
    # A minor (natural) = C major's pitch classes; A harmonic minor's G# breaks it: 6 of 7.
    a_harmonic = [57, 59, 60, 62, 64, 65, 68]
    assert scale_consistency(clip([(i, p, 1) for i, p in enumerate(a_harmonic)])) == pytest.approx(6 / 7)


def test_all_features_hand_example():
    c = clip([(0, 60, 4, 6), (0, 64, 4, 7), (4, 67, 4, 127), (8, 72, 4, 64)])
    f = midi_features(c)
    assert tuple(f) == FEATURE_NAMES
    assert f["n_notes"] == 4
    assert f["pitch_range"] == 12
    assert f["velocity_range"] == 121
    assert f["scale_consistency"] == 1.0
    # length 12: ticks 0–3 have two pitches (and 4 is where E ends and G starts): never > 2.
    assert f["polyphony_rate"] == 0.0
    assert polyphony_rate(c, threshold=1) == pytest.approx(4 / 12)
    # 12 // 4 + 1 = 4 beats, the note ending at 12 marks beat 3.
    assert f["empty_beat_rate"] == 0.0
    expected_pitch = [0.0] * 12
    expected_pitch[0], expected_pitch[4], expected_pitch[7] = 0.5, 0.25, 0.25
    assert f["pitch_histogram"] == pytest.approx(expected_pitch)
    # Velocity bins are 6.35 wide: 6 → 0, 7 → 1, 64 → 10, 127 → 19 (last bin closed).
    expected_velocity = [0.0] * 20
    for b in (0, 1, 10, 19):
        expected_velocity[b] = 0.25
    assert f["velocity_histogram"] == pytest.approx(expected_velocity)


def test_tokenizer_velocity_values_land_in_distinct_bins():
    # MidiTok's 20 velocity values are the floored upper bin edges (6, 12, 19, ..., 127).
    values = np.floor(VELOCITY_BIN_EDGES[1:]).astype(int)
    c = clip([(i, 60, 1, int(v)) for i, v in enumerate(values)])
    assert midi_features(c)["velocity_histogram"] == pytest.approx([1 / 20] * 20)


def test_empty_clip_is_valid_json_without_nan():
    f = midi_features(Clip())
    assert f == {
        "n_notes": 0,
        "polyphony_rate": 0.0,
        "empty_beat_rate": 1.0,
        "pitch_range": 0,
        "scale_consistency": 0.0,
        "velocity_range": 0,
        "pitch_histogram": [0.0] * 12,
        "velocity_histogram": [0.0] * 20,
    }
    json.dumps(f, allow_nan=False)


def test_features_are_plain_python_types():
    f = midi_features(clip([(0, 60, 3, 90), (1, 65, 5, 40)]))
    assert json.loads(json.dumps(f, allow_nan=False)) == f
    assert all(type(f[k]) is int for k in ("n_notes", "pitch_range", "velocity_range"))
    assert all(type(f[k]) is float for k in ("polyphony_rate", "empty_beat_rate", "scale_consistency"))
    assert all(type(x) is float for x in f["pitch_histogram"] + f["velocity_histogram"])


# ------------------------------------------------------------------ window
def test_window_follows_the_tempo_map():
    # 120 bpm for the first 2 s (1920 ticks at ppq 480), then 60 bpm: 3 s is tick 2400.
    tempos = [TempoChange(0, 120.0), TempoChange(1920, 60.0)]
    c = clip([(0, 60, 100), (2399, 62, 1000), (2400, 64, 100), (3000, 65, 100)], ppq=480, tempos=tempos)
    assert [n.start for n in window_notes(c, 3.0)] == [0, 2399]  # 2400 is exactly 3 s: out
    assert [n.start for n in window_notes(c, 1.0)] == [0]
    assert window_notes(c, 0.0) == []
    assert window_notes(c, None) == c.notes
    f = midi_features(c, window_seconds=3.0)
    assert f["n_notes"] == 2
    assert f["pitch_range"] == 2
    # Notes are kept whole: length 3399 → 3399 // 480 + 1 = 8 beats, beats 0 and 4–7 marked.
    assert f["empty_beat_rate"] == pytest.approx(3 / 8)
    assert midi_features(c, window_seconds=0.0) == midi_features(Clip(ppq=480))
    with pytest.raises(ValueError):
        midi_features(c, window_seconds=-1.0)


# ------------------------------------------------------------------ brute-force reference
def _reference(c: Clip) -> tuple[float, float, float]:
    """MusPy's loops over a dense tick roll (MusPy: more than 2 pitches counts as polyphonic)."""
    length = max(n.end for n in c.notes)
    roll = np.zeros((length, 128), bool)
    for n in c.notes:
        roll[n.start : n.end, n.pitch] = True
    poly = np.count_nonzero(roll.sum(1) > 2) / length
    n_beats = length // c.ppq + 1
    empty = [True] * n_beats
    for n in c.notes:
        for beat in range(n.start // c.ppq, n.end // c.ppq + 1):
            empty[beat] = False
    major = [0, 2, 4, 5, 7, 9, 11]
    minor = [0, 2, 3, 5, 7, 8, 10]
    distinct = {(n.start, n.pitch) for n in c.notes}  # a same-onset same-pitch duplicate counts once
    best = max(
        sum((pitch - root) % 12 in scale for _, pitch in distinct) / len(distinct)
        for root in range(12)
        for scale in (major, minor)
    )
    return poly, sum(empty) / n_beats, best


def test_vectorized_features_match_brute_force_on_random_clips():
    rng = random.Random(7)
    for _ in range(60):
        ppq = rng.choice([1, 3, 4, 8])
        notes = [
            Note(rng.randrange(0, 40), rng.randrange(55, 70), rng.randrange(0, 12), rng.randrange(1, 128))
            for _ in range(rng.randrange(1, 15))
        ]
        c = Clip(notes, ppq)
        if c.end_tick == 0:
            continue
        poly, empty, consistency = _reference(c)
        f = midi_features(c)
        assert f["polyphony_rate"] == pytest.approx(poly)
        assert f["empty_beat_rate"] == pytest.approx(empty)
        assert f["scale_consistency"] == pytest.approx(consistency)


def test_long_dense_clip_does_not_build_a_tick_roll():
    # 10k notes over ~10^9 ticks: a [ticks, 128] roll would need terabytes.
    rng = np.random.default_rng(0)
    starts = np.sort(rng.integers(0, 10**9, 10_000))
    c = Clip([Note(int(s), int(p), 5_000_000, 80) for s, p in zip(starts, rng.integers(21, 109, 10_000))], 480)
    f = midi_features(c)
    assert f["n_notes"] == 10_000
    assert 0.0 < f["polyphony_rate"] <= 1.0
    assert 0.0 <= f["empty_beat_rate"] < 1.0


# ------------------------------------------------------------------ piano rolls
def test_piano_roll_quantizes_to_steps():
    # ppq 480, 4 steps per beat → 120 ticks per step.
    c = clip([(0, 60, 480, 127), (130, 72, 10, 64), (480, 64, 240, 32)], ppq=480)
    roll = piano_roll(c)
    assert roll.shape == (6, 128) and roll.dtype == np.float32
    assert roll[:, 60].tolist() == [1, 1, 1, 1, 0, 0]
    assert roll[:, 72].tolist() == [0, 1, 0, 0, 0, 0]  # a 10-tick note still gets a step
    assert roll[:, 64].tolist() == [0, 0, 0, 0, 1, 1]
    assert roll.sum() == 4 + 1 + 2
    velocity = piano_roll(c, binary=False)
    assert velocity[0, 60] == pytest.approx(1.0)
    assert velocity[4, 64] == pytest.approx(32 / 127)
    assert np.array_equal(velocity > 0, roll > 0)


def test_piano_roll_overlapping_notes_and_fixed_length():
    c = clip([(0, 60, 8, 40), (2, 60, 2, 100), (6, 62, 20, 90)], ppq=4)
    roll = piano_roll(c, steps_per_beat=2, n_beats=2)  # 2 ticks per step, 4 steps
    assert roll.shape == (4, 128)
    assert roll[:, 60].tolist() == [1, 1, 1, 1]
    assert roll[:, 62].tolist() == [0, 0, 0, 1]  # cut at the fixed length
    velocity = piano_roll(c, steps_per_beat=2, n_beats=2, binary=False)
    assert velocity[:, 60] == pytest.approx([40 / 127, 100 / 127, 40 / 127, 40 / 127])
    assert piano_roll(Clip()).shape == (0, 128)
    assert piano_roll(Clip(), n_beats=3).shape == (12, 128)


def test_average_piano_roll():
    a = clip([(0, 60, 4)])
    avg = average_piano_roll([a, Clip(ppq=4), a, clip([(60, 61, 4)])], steps_per_beat=4, n_beats=16)
    assert avg.shape == (64, 128)
    assert avg[:4, 60] == pytest.approx([0.5] * 4)
    assert avg[4:, 60].sum() == 0
    assert avg[60:, 61] == pytest.approx([0.25] * 4)
    assert avg.sum() == pytest.approx((4 * 2 + 4) / 4)
    assert average_piano_roll([]).shape == (64, 128)


# ------------------------------------------------------------------ diversity
def test_diversity_identical_and_disjoint():
    a = clip([(0, 60, 4), (4, 64, 4)])
    b = clip([(0, 72, 8)])
    same = diversity([a, a.copy(), a.copy()])
    assert same["pairwise_distance"] == 0.0
    assert same["unique_fraction"] == pytest.approx(1 / 3)
    apart = diversity([a, b])
    assert apart["pairwise_distance"] == 1.0
    assert apart["unique_fraction"] == 1.0


def test_diversity_partial_overlap_and_padding():
    one_beat = clip([(0, 60, 4)])
    two_beats = clip([(0, 60, 8)])
    # Cells: 4 shared of 8 in the union → 0.5 (the shorter roll is padded with silence).
    assert diversity([one_beat, two_beats])["pairwise_distance"] == pytest.approx(0.5)
    # Three clips: pairs (0.5, 0, 0.5) → mean 1/3.
    assert diversity([one_beat, two_beats, one_beat])["pairwise_distance"] == pytest.approx(1 / 3)
    # Cut to one beat, the two rolls are the same.
    assert diversity([one_beat, two_beats], n_beats=1)["pairwise_distance"] == 0.0


def test_diversity_edge_cases():
    assert diversity([]) == {"pairwise_distance": 0.0, "roll_entropy": 0.0, "unique_fraction": 0.0}
    empty = diversity([Clip(), Clip()])
    assert empty == {"pairwise_distance": 0.0, "roll_entropy": 0.0, "unique_fraction": 0.5}
    # An empty roll and a non-empty one have nothing in common.
    assert diversity([Clip(ppq=4), clip([(0, 60, 4)])])["pairwise_distance"] == 1.0
    single = diversity([clip([(0, 60, 4)])])
    assert single["pairwise_distance"] == 0.0 and single["unique_fraction"] == 1.0


def test_roll_entropy_normalized():
    # One beat at one step per beat: 128 cells. One occupied cell → 0; two equally → ln2/ln128.
    a, b = clip([(0, 60, 4)]), clip([(0, 61, 4)])
    assert diversity([a, a], steps_per_beat=1, n_beats=1)["roll_entropy"] == 0.0
    assert diversity([a, b], steps_per_beat=1, n_beats=1)["roll_entropy"] == pytest.approx(1 / 7)
    every_pitch = [clip([(0, p, 4)]) for p in range(128)]
    assert diversity(every_pitch, steps_per_beat=1, n_beats=1)["roll_entropy"] == pytest.approx(1.0)
    assert not math.isnan(diversity([Clip()])["roll_entropy"])


def test_stacked_duplicates_count_once():
    """Same-onset same-pitch copies change no feature: not the count, not the histograms, not the scale."""
    notes = [(0, 60, 4, 80), (4, 61, 4, 80), (8, 64, 4, 80), (12, 67, 8, 80)]
    stacked = notes + [(4, 61, 2, 100)] * 5 + [(12, 67, 8, 80)] * 3
    assert midi_features(clip(stacked)) == midi_features(clip(notes + [(4, 61, 2, 100)]))
    f = midi_features(clip(stacked))
    assert f["n_notes"] == 4
    assert f["scale_consistency"] == pytest.approx(3 / 4)  # stacking the off-scale C# does not lower it
    assert scale_consistency(clip(stacked)) == f["scale_consistency"]
    # The longest (then loudest) copy is the one kept: the 4-tick C# at velocity 80.
    assert f["velocity_range"] == 0
