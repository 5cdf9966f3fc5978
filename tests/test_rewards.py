"""Reward functions: decoding completions in the prompt's context, offline rewards, the shared MAA pass."""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine.errors import UserError
from engine.music import Clip, Note, TempoChange, TimeSignature
from engine.tokenizer import RemiTokenizer
from training.rewards import (NOTES_TARGET, RolloutAnalyzer, build_rewards, combined_reward, decode_rollout,
                              parse_reward_spec, register_reward)


@pytest.fixture(scope="module")
def tok():
    return RemiTokenizer()


def _notes_ids(tok, pitches, position_step=8):
    """Tokens of quarter notes after a procedural header: Position, Pitch, Velocity, Duration each."""
    ids = []
    for i, p in enumerate(pitches):
        ids += [tok.vocab[f"Position_{(i * position_step) % 32}"], tok.vocab[f"Pitch_{p}"],
                tok.vocab["Velocity_76"], tok.vocab["Duration_1.0.8"]]
    return ids


def _text(tok, ids):
    return tok.ids_to_text(ids)


def test_decode_rollout_continues_the_prompt_state(tok):
    prompt = tok.procedural_prompt(random.Random(0), time_signature=(3, 4), bpm=90)
    comp = _notes_ids(tok, [60, 62, 64]) + [tok.bar_id, tok.vocab["TimeSig_3/4"]] + _notes_ids(tok, [65]) + [tok.eos_id]
    clip = decode_rollout(tok, prompt, comp)
    assert [n.pitch for n in clip.notes] == [60, 62, 64, 65]
    assert clip.time_signature.numerator == 3 and clip.bpm == pytest.approx(90)
    assert clip.notes[3].start == 3 * clip.ppq  # second bar of 3/4
    # A continuation prompt that ends on a bar line: the completion's bar becomes tick 0.
    user = Clip([Note(i * 480, 60 + i, 480, 80) for i in range(8)], 480, [TempoChange(0, 120)],
                [TimeSignature(0, 4, 4)])
    prompt = tok.continuation_prompt(user)
    comp = [tok.bar_id, tok.vocab["TimeSig_4/4"]] + _notes_ids(tok, [72])
    clip = decode_rollout(tok, prompt, comp)
    assert [(n.start, n.pitch) for n in clip.notes] == [(0, 72)]
    # Garbage never raises.
    assert decode_rollout(tok, prompt, [10**6, -3, tok.pad_id]).notes == []


def test_parse_reward_spec():
    specs = parse_reward_spec("maa-ce=1, maa-pq=0.5,notes")
    assert [(s.name, s.weight) for s in specs] == [("maa-ce", 1.0), ("maa-pq", 0.5), ("notes", 1.0)]
    assert parse_reward_spec("mymod.sub:func=0.3")[0].name == "mymod.sub:func"
    for bad in ("", "nope", "notes=abc", "notes=inf"):
        with pytest.raises(UserError):
            parse_reward_spec(bad)


def test_notes_and_scale_rewards(tok):
    analyzer = RolloutAnalyzer(tok)
    funcs, weights = build_rewards(parse_reward_spec("notes,scale=2"), analyzer)
    prompt = _text(tok, tok.procedural_prompt(random.Random(1), time_signature=(4, 4), bpm=120))
    c_major = _text(tok, _notes_ids(tok, [60, 62, 64, 65, 67, 69, 71, 72]))
    chromatic = _text(tok, _notes_ids(tok, [60, 61, 62, 63, 64, 65, 66, 67]))
    empty = ""
    logged = {}
    notes = funcs[0]([prompt] * 3, [c_major, chromatic, empty], log_metric=logged.__setitem__)
    assert notes == pytest.approx([8 / NOTES_TARGET, 8 / NOTES_TARGET, 0.0])
    scale = funcs[1]([prompt] * 3, [c_major, chromatic, empty])
    assert scale[0] == pytest.approx(1.0) and scale[1] < 0.9 and scale[2] == 0.0
    assert weights == [1.0, 2.0]
    assert logged["music/notes_10s"] == pytest.approx(16 / 3)
    assert "diversity/pairwise_distance" in logged
    # Notes after the first 10 s do not count: 40 quarter notes at 120 bpm last 20 s.
    many = []
    for bar in range(10):
        many += [tok.bar_id, tok.vocab["TimeSig_4/4"]] + _notes_ids(tok, [60, 62, 64, 65])
    assert funcs[0]([prompt], [_text(tok, many[2:])]) == pytest.approx([20 / NOTES_TARGET])


def _stacked_ids(tok, pitches, copies):
    """Like `_notes_ids`, but every note written `copies` times at its position (what GRPO learned to do)."""
    ids = []
    for i, p in enumerate(pitches):
        ids.append(tok.vocab[f"Position_{(i * 8) % 32}"])
        for k in range(copies):
            ids += [tok.vocab[f"Pitch_{p}"], tok.vocab[f"Velocity_{[76, 95, 127][k % 3]}"],
                    tok.vocab[["Duration_1.0.8", "Duration_0.4.8"][k % 2]]]
    return ids


def test_stacking_duplicate_notes_earns_no_more_reward(tok):
    """The `notes` reward counts distinct notes: copies at the same onset and pitch earn nothing,
    in one completion or across a GRPO group (so the policy gradient cannot favour stacking)."""
    analyzer = RolloutAnalyzer(tok)
    notes, scale = build_rewards(parse_reward_spec("notes,scale"), analyzer)[0]
    prompt = _text(tok, tok.procedural_prompt(random.Random(4), time_signature=(4, 4), bpm=120))
    pitches = [60, 62, 64, 65, 61, 67, 69, 71]

    def completion(copies):  # the prompt's open bar, then one more bar
        ids = _stacked_ids(tok, pitches[:4], copies) + [tok.bar_id, tok.vocab["TimeSig_4/4"]]
        return _text(tok, ids + _stacked_ids(tok, pitches[4:], copies))

    group = [completion(copies) for copies in (1, 2, 5)]
    rewards = notes([prompt] * 3, group)
    assert rewards == pytest.approx([8 / NOTES_TARGET] * 3)
    assert len(set(scale([prompt] * 3, group))) == 1
    clips = analyzer.batch([prompt] * 3, group).clips
    assert [len(c.notes) for c in clips] == [8, 8, 8]  # the decoder keeps one note per onset and pitch


def test_combined_and_custom_rewards(tok):
    analyzer = RolloutAnalyzer(tok)

    def pitch_mean(prompts, completions, rollouts, **kwargs):
        return [float(np.mean([n.pitch for n in c.notes])) if c.notes else 0.0 for c in rollouts.clips]

    register_reward("test-pitch-mean", pitch_mean)
    prompt = _text(tok, tok.procedural_prompt(random.Random(2)))
    comps = [_text(tok, _notes_ids(tok, [60, 64])), _text(tok, _notes_ids(tok, [70]))]
    reward = combined_reward(parse_reward_spec("test-pitch-mean=0.5,notes=100"), analyzer)
    assert reward([prompt] * 2, comps) == pytest.approx([0.5 * 62 + 2, 0.5 * 70 + 1])
    funcs, _ = build_rewards(parse_reward_spec("test_rewards:module_level_reward"), analyzer)
    assert funcs[0]([prompt] * 2, comps) == [2.0, 1.0]
    with pytest.raises(UserError):
        build_rewards(parse_reward_spec("no_such_module_xyz:f"), analyzer)


def module_level_reward(prompts, completions, completion_ids=None, **kwargs):
    """Loaded by name (`module:function`): counts Pitch tokens in the completion text."""
    return [float(sum(w.startswith("Pitch_") for w in c.split())) for c in completions]


def test_maa_rewards_share_one_render_and_score(tok, monkeypatch):
    """CE and PQ of a batch come from one render + one scoring pass (random-weight MAA: plumbing only)."""
    from engine.scorer import MAAScorer, build_maa_model

    scorer = MAAScorer.from_model(build_maa_model(small=True, seed=0), device="cpu", is_random=True)
    analyzer = RolloutAnalyzer(tok, scorer=scorer, processes=1, seconds=4.0)
    counts = {"render": 0, "score": 0}
    real_render, real_score = analyzer.render, analyzer.score

    def render(clips, timings=None):
        counts["render"] += 1
        return real_render(clips, timings)

    def score(audio, timings=None):
        counts["score"] += 1
        return real_score(audio, timings)

    monkeypatch.setattr(analyzer, "render", render)
    monkeypatch.setattr(analyzer, "score", score)
    funcs, _ = build_rewards(parse_reward_spec("maa-ce,maa-pq"), analyzer)
    prompt = _text(tok, tok.procedural_prompt(random.Random(3)))
    comps = [_text(tok, _notes_ids(tok, [60, 64, 67])), ""]
    logged = {}
    ce = funcs[0]([prompt] * 2, comps, log_metric=logged.__setitem__)
    pq = funcs[1]([prompt] * 2, comps, log_metric=logged.__setitem__)
    assert counts == {"render": 1, "score": 1}
    assert all(1.0 <= v <= 10.0 for v in ce + pq)
    assert ce[0] != ce[1]  # a piano phrase and silence score differently even with random weights
    assert set(k for k in logged if k.startswith("maa/")) == {"maa/CE", "maa/CU", "maa/PC", "maa/PQ"}
    assert logged["maa/CE"] == pytest.approx(np.mean(ce))
    # A new batch is analysed afresh.
    funcs[0]([prompt] * 2, list(reversed(comps)))
    assert counts == {"render": 2, "score": 2}


def test_maa_reward_without_weights_is_a_user_error(tok):
    analyzer = RolloutAnalyzer(tok)
    funcs, _ = build_rewards(parse_reward_spec("maa-ce"), analyzer)
    with pytest.raises(UserError, match="MAA"):
        funcs[0]([_text(tok, tok.procedural_prompt(random.Random(4)))], [""])


def test_eval_duplicate_rate_counts_what_the_model_wrote(tok):
    """`smart eval` reports the share of notes the model wrote twice (dropped by the decoder)."""
    from training.evaluate import completion_note_counts, duplicate_stats

    prompt = tok.procedural_prompt(random.Random(5), time_signature=(4, 4), bpm=120)
    clean = _stacked_ids(tok, [60, 62, 64, 65], 1)
    stacked = _stacked_ids(tok, [60, 62, 64, 65], 3)  # each note written three times
    assert completion_note_counts(tok, prompt, clean) == (4, 0)
    assert completion_note_counts(tok, prompt, stacked) == (12, 8)
    stats = duplicate_stats([(4, 0), (12, 8)])
    assert stats["rate"] == pytest.approx(8 / 16) and stats["outputs_with_duplicates"] == 0.5
    assert duplicate_stats([])["rate"] == 0.0


def _chord_bars(tok, chords, n):
    """Tokens of n 4/4 bars of quarter-note onsets, onset k a chord of the pitches chords[k]."""
    ids = []
    for _ in range(n):
        for k, chord in enumerate(chords):
            ids.append(tok.vocab[f"Position_{k * 8}"])
            for p in chord:
                ids += [tok.vocab[f"Pitch_{p}"], tok.vocab["Velocity_76"], tok.vocab["Duration_1.0.8"]]
        ids += [tok.bar_id, tok.vocab["TimeSig_4/4"]]
    return ids


def test_a_reward_cannot_be_raised_by_running_out_of_tokens(tok):
    """Issue 23's exploit: music cut short by the token budget was scored as if it were the whole 10 s.
    Now only complete bars are heard: the same bars score the same whether the budget cut them or not,
    a completion cut inside its first bar gets the floor, and big stacked chords earn no more."""
    prompt = _text(tok, tok.procedural_prompt(random.Random(5), time_signature=(4, 4), bpm=120))

    def bars(chords, n):
        return _chord_bars(tok, chords, n)

    triads = [[60, 64, 67], [62, 65, 69], [64, 67, 71], [65, 69, 72]]
    complete = bars(triads, 6) + [tok.eos_id]  # 6 bars at 120 bpm: 12 s, fills the 10 s window
    budget = len(bars(triads, 2)) + 20  # runs out 20 tokens into the third bar
    cut = complete[:budget]
    seven = bars([[48, 52, 55, 60, 64, 67, 72]] * 4, 6) + [tok.eos_id]
    lone_note = bars([[60]], 1)[:3]  # cut before its first bar ends

    analyzer = RolloutAnalyzer(tok, max_completion_tokens=len(complete))
    funcs, _ = build_rewards(parse_reward_spec("notes,scale-consistency"), analyzer)
    texts = [_text(tok, ids) for ids in (complete, seven)]
    full_notes, seven_notes = funcs[0]([prompt] * 2, texts)
    assert full_notes == pytest.approx(12 * 10 / 2 / NOTES_TARGET)  # 12 notes a bar, 5 bars in 10 s
    assert seven_notes == pytest.approx(full_notes * 4 / 3)  # chords of 7 count as 4

    short = RolloutAnalyzer(tok, max_completion_tokens=budget)
    notes, scale = build_rewards(parse_reward_spec("notes,scale-consistency"), short)[0]
    batch = short.batch([prompt], [_text(tok, cut)])
    assert batch.truncated() == [True] and batch.heard_seconds == pytest.approx([4.0])  # two complete bars
    assert len(batch.clips[0].notes) == 24  # the third bar's notes, cut by the budget, are not heard
    assert notes([prompt], [_text(tok, cut)]) == pytest.approx([full_notes])  # same bars, same reward
    tiny = RolloutAnalyzer(tok, max_completion_tokens=len(lone_note))
    notes, scale = build_rewards(parse_reward_spec("notes,scale-consistency"), tiny)[0]
    assert tiny.batch([prompt], [_text(tok, lone_note)]).heard_seconds == [0.0]
    assert notes([prompt], [_text(tok, lone_note)]) == [0.0] and scale([prompt], [_text(tok, lone_note)]) == [0.0]
    # Without a budget nothing is truncated.
    assert RolloutAnalyzer(tok).batch([prompt], [_text(tok, cut)]).truncated() == [False]


def test_drift_monitor_sees_the_packed_chords_the_reward_paid_for(tok):
    """The drift guard's measure: the base model's batch is the baseline; a batch that packs chords into
    fewer bars until its tokens run out is far from it, though each of its notes is a fine note."""
    from training.guards import DriftGuard
    from training.rewards import DriftMonitor, drift_features

    prompt = _text(tok, tok.procedural_prompt(random.Random(5), time_signature=(4, 4), bpm=120))

    def bars(chords, n, end=True):
        return _chord_bars(tok, chords, n) + ([tok.eos_id] if end else [])

    base = [bars([[60 + i], [64], [67], [72 - i]], 5) for i in range(4)]
    budget = max(len(b) for b in base)
    packed = [(bars([[48, 52, 55, 60 + i, 64, 67]] * 8, 6, end=False))[:budget] for i in range(4)]
    analyzer = RolloutAnalyzer(tok, max_completion_tokens=budget)
    monitor = DriftMonitor()
    first = monitor.observe(drift_features(analyzer.batch([prompt] * 4, [_text(tok, b) for b in base])))
    again = monitor.observe(drift_features(analyzer.batch([prompt] * 4, [_text(tok, b) for b in reversed(base)])))
    drifted = monitor.observe(drift_features(analyzer.batch([prompt] * 4, [_text(tok, p) for p in packed])))
    assert first["distance"] == 0.0 and again["distance"] == pytest.approx(0.0)
    assert drifted["distance"] > 1.0
    assert drifted["shift/notes_per_onset"] > 3 and drifted["shift/truncated"] > 3
    guard = DriftGuard(threshold=1.0, window=2)
    fired = [guard.observe(step, d) for step, d in enumerate([0.0, 0.1, 0.2, 1.8, 2.5], start=1)]
    assert fired[:4] == [None] * 4 and fired[4]["step"] == 5 and fired[4]["drift_recent"] > 1.0
