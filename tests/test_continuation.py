"""Continuations in any meter: the bars the tokens count are the bars of the clip (tokenizer.model_meter),
continuations start where they are asked to, and `smart generate`'s contract (issue 11)."""

from __future__ import annotations

import json
import math
import random

import pytest
import symusic

from engine.cli import main
from engine.features import midi_features
from engine.music import Clip, Note, TempoChange, TimeSignature
from engine.policy import GenerationSettings, Policy, DEFAULT_MODEL_DIR
from engine.tokenizer import RemiTokenizer

PPQ = 480

# Meters files carry (POP909: 1/4 in two thirds of the songs; ASAP: 12/16, 2/8, 5/8, 7/8 …) and mid-piece
# changes: (tick, numerator, denominator) lists.
METERS = {
    "1/4": [(0, 1, 4)],
    "3/4": [(0, 3, 4)],
    "4/4": [(0, 4, 4)],
    "6/8": [(0, 6, 8)],
    "5/8": [(0, 5, 8)],
    "7/8": [(0, 7, 8)],
    "12/16": [(0, 12, 16)],
    "2/8": [(0, 2, 8)],
    "4/4 then 3/4 on a bar line": [(0, 4, 4), (8 * PPQ, 3, 4)],
    "4/4 then 3/4 inside a bar": [(0, 4, 4), (9 * PPQ, 3, 4)],
    "1/4 then 3/4": [(0, 1, 4), (5 * PPQ, 3, 4)],
    "3/4, a 2/8 bar, 3/4": [(0, 3, 4), (6 * PPQ, 2, 8), (7 * PPQ, 3, 4)],
}


@pytest.fixture(scope="module")
def tok():
    return RemiTokenizer()


def melody(sigs, beats: int = 24, bpm: float = 100.0) -> Clip:
    """A note on every beat (eighth-note grid), ending `beats` quarter notes in."""
    notes = [Note(i * PPQ, 60 + (i * 5) % 12, PPQ - 80, 80) for i in range(beats)]
    return Clip(notes, PPQ, [TempoChange(0, bpm)], [TimeSignature(*s) for s in sigs])


def pop_clip(bars: int = 8, sig=(1, 4)) -> Clip:
    """Pop-like 4/4 music (chords on beats 1 and 3, eighth-note melody) in a file that says 1/4, as POP909's do."""
    rng = random.Random(3)
    chords = [[48, 52, 55], [45, 48, 52], [41, 45, 48], [43, 47, 50]]
    notes = []
    for b in range(bars):
        t0 = b * 4 * PPQ
        for p in chords[b % 4]:
            notes += [Note(t0, p, 1800, 60), Note(t0 + 2 * PPQ, p, 840, 55)]
        notes += [Note(t0 + k * 240, 72 + rng.choice([0, 2, 4, 7, 9]), 220, 80) for k in range(8)]
    return Clip(notes, PPQ, [TempoChange(0, 96.0)], [TimeSignature(0, *sig)])


def token_bar_ticks(tok, ids) -> list[int]:
    """The tick (at PPQ) where each Bar token of `ids` opens its bar."""
    dec = tok.decoder(PPQ)
    ticks = []
    for t in ids:
        dec.feed(t)
        if t == tok.bar_id:
            ticks.append(round(dec.bar_tick * dec.scale))
    return ticks


# ---------------------------------------------------------------------------- tokens and clip agree
@pytest.mark.parametrize("name", list(METERS))
def test_tokens_and_clip_agree_on_every_bar_line(tok, name):
    clip = melody(METERS[name])
    model, note = tok.model_meter(clip)
    ids = tok.encode(clip)
    # What the model was trained on: MidiTok's own encoding of the file (it drops meters outside the
    # vocabulary and moves changes to bar lines) is exactly the encoding of the re-barred clip.
    ref = tok.remi.encode(clip.to_score())
    assert ids == list((ref[0] if isinstance(ref, list) else ref).ids)
    assert token_bar_ticks(tok, ids) == model.bar_starts(clip.notes[-1].start)
    back = tok.decode(ids, PPQ)
    assert back.time_signatures == model.time_signatures
    assert {(n.start, n.pitch) for n in back.notes} == {(n.start, n.pitch) for n in clip.notes}
    assert [(n.start, n.pitch, n.duration) for n in model.notes] == [(n.start, n.pitch, n.duration) for n in clip.notes]
    supported = all((t.numerator, t.denominator) in tok.time_signatures for t in clip.time_signatures)
    on_bar_lines = model.time_signatures == clip.time_signatures
    assert (note is None) == (supported and on_bar_lines)
    assert tok.model_meter(model) == (model, None)  # idempotent: a re-barred clip stays as it is


def test_meter_notes_say_what_was_done(tok):
    assert tok.model_meter(melody([(0, 1, 4)]))[1] == "1/4 read as 4/4 (bars of 4 beats)"
    assert tok.model_meter(melody([(0, 12, 16)]))[1] == "12/16 read as 4/4 (bars of 4 beats)"
    assert tok.model_meter(melody(METERS["3/4, a 2/8 bar, 3/4"]))[1] == "2/8 from bar 3 read as 3/4 (bars of 3 beats)"
    note = tok.model_meter(melody(METERS["4/4 then 3/4 inside a bar"]))[1]
    assert note == "3/4 moved to the next bar line (bar 4)"
    # POP909 files often state 4/4 and 1/4 at tick 0; the later one is the one in force.
    clip = melody([(0, 1, 4)])
    assert tok.model_meter(Clip(clip.notes, PPQ, clip.tempos, [TimeSignature(0, 4, 4)]))[1] is None


@pytest.mark.parametrize("name", list(METERS))
@pytest.mark.parametrize("beats, extra", [(24, 0), (22, 0), (22, 240), (16, 9 * PPQ)])
def test_continuation_prompt_ends_in_the_bar_of_the_continuation_point(tok, name, beats, extra):
    """On a bar line, inside a bar, between notes, and bars after the last note: the prompt's open bar is
    the bar containing `at`, with exactly the bars before it (none added)."""
    clip = melody(METERS[name], beats)
    model, _ = tok.model_meter(clip)
    at = clip.end_tick + extra
    ids = tok.continuation_prompt(clip, at)
    bar = model.bar_index_at(at)
    assert sum(1 for t in ids if t == tok.bar_id) == bar + 1
    assert token_bar_ticks(tok, ids)[-1] == model.bar_tick(bar)
    # The first Position the grammar allows puts a note at the continuation point (to a 64th).
    dec = tok.decoder(PPQ)
    dec.feed_many(ids)
    floor = tok.position_floor(clip, at)
    dec.feed_many([tok.vocab[f"Position_{floor}"], tok.vocab["Pitch_64"], tok.vocab["Velocity_63"],
                   tok.vocab["Duration_1.0.8"]])
    ts = model.time_signature_at(at)
    step = PPQ * 4 // ts.denominator // tok.pos_per_beat
    assert at <= dec.notes[-1].start < at + step


def test_a_one_four_file_gives_bars_of_four_beats(tok):
    """The reported defect: a 32-beat 1/4 song used to give a 32-bar prompt padded with empty 4/4 bars."""
    clip = pop_clip(8)
    ids = tok.continuation_prompt(clip)  # its last note ends just before beat 32: bar 8 stays open
    assert sum(1 for t in ids if t == tok.bar_id) == 8
    ids = tok.continuation_prompt(clip, at_tick=32 * PPQ)
    assert sum(1 for t in ids if t == tok.bar_id) == 9  # 8 bars of music + the open one
    assert tok.ids_to_tokens(ids[1:3]) == ["Bar_None", "TimeSig_4/4"]
    model, _ = tok.model_meter(clip)
    assert model.last_bars(2).notes == [Note(n.start - 6 * 4 * PPQ, n.pitch, n.duration, n.velocity)
                                        for n in clip.notes if n.start >= 6 * 4 * PPQ]


def test_infill_counts_the_bars_of_the_model_meter(tok):
    clip = pop_clip(8)
    ids = tok.infill_prompt(clip, 2, 4)
    pre = ids[1:ids.index(tok.fim_suffix_id)]
    suffix = ids[ids.index(tok.fim_suffix_id) + 1:-1]
    assert sum(1 for t in pre if t == tok.bar_id) == 2 and sum(1 for t in suffix if t == tok.bar_id) == 4
    assert tok.decode(suffix, PPQ).notes[0].start == 0  # the suffix opens at bar 5 = beat 16


# ---------------------------------------------------------------------------- the first new note
def first_note_offsets(policy, clip, at, n=4):
    cands = policy.continue_clip(clip, GenerationSettings(candidates=n, bars=1, seed=0, max_new_tokens=48), at_tick=at)
    return [(min(x.start for x in c.notes) - at) / PPQ for c in cands if c.notes]


@pytest.mark.slow
def test_first_note_comes_within_beats_of_the_continuation_point(tmp_path_factory):
    """A small model trained on melodies in 4/4, 3/4 and 6/8, continuing clips whose meters it reads as
    those (1/4, 12/16, 2/8 → 4/4; changes): the first new note comes within a beat or two (at most the
    rest of an open bar), not bars later. (5/8 and 7/8 are left out: this model has never seen them.)"""
    from test_grpo import note_model_dir

    policy = Policy.load(note_model_dir(tmp_path_factory))
    for name, sigs in METERS.items():
        if name in ("5/8", "7/8"):
            continue
        for beats, extra in ((24, 0), (22, 0)):
            clip = melody(sigs, beats)
            offsets = first_note_offsets(policy, clip, clip.end_tick + extra)
            assert offsets and all(0 <= o <= 3.0 for o in offsets), (name, beats, offsets)


@pytest.mark.slow
@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.safetensors").exists(), reason="no shipped model")
def test_shipped_model_continues_a_one_four_pop_clip_at_once():
    policy = Policy.load(DEFAULT_MODEL_DIR)
    clip = pop_clip(8)
    offsets = first_note_offsets(policy, clip, clip.end_tick)
    assert len(offsets) == 4 and max(offsets) <= 1.0, offsets  # measured: 0.04 beats (was 93–98 beats)


# ---------------------------------------------------------------------------- duplicates
def test_decoder_drops_stacked_duplicates_and_counts_them(tok):
    note = lambda p, v, d: [tok.vocab[f"Pitch_{p}"], tok.vocab[f"Velocity_{v}"], tok.vocab[f"Duration_{d}"]]
    ids = tok.header_ids((4, 4), 120) + note(60, 76, "1.0.8") + note(60, 127, "2.0.8") + note(64, 76, "1.0.8")
    ids += [tok.vocab["Position_8"]] + note(60, 76, "1.0.8")  # same pitch, later onset: a new note
    dec = tok.decoder(PPQ)
    streamed = dec.feed_many(ids)
    assert [(n.start, n.pitch, n.velocity) for n in streamed] == [(0, 60, 76), (0, 64, 76), (PPQ, 60, 76)]
    assert dec.duplicates == 1 and dec.clip().notes == streamed
    assert tok.decode(ids).notes == streamed


# ---------------------------------------------------------------------------- smart generate
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny"
    Policy.create("tiny", seed=0).save(d)
    return d


def generate(capsys, *argv):
    code = main(["generate", *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def next_bar_line(beat: float, beats_per_bar: float) -> float:
    return math.ceil(beat / beats_per_bar - 1e-9) * beats_per_bar


@pytest.mark.parametrize("sig, prompt_beats, prompt_bars, kept_beats, beats_per_bar", [
    ((1, 4), 32, 2, 8, 4.0),   # POP909: 1/4 read as 4/4; the last 2 bars are 8 beats, not 2
    ((1, 4), 22, 2, 6, 4.0),   # ends inside a bar: the last 2 bars are beats 16–24
    ((3, 4), 24, None, 24, 3.0),
    ((6, 8), 22, 2, 4, 3.0),   # 6/8 bars are 3 quarter notes
])
def test_generate_contract(capsys, tmp_path, monkeypatch, tiny_model, sig, prompt_beats, prompt_bars, kept_beats,
                           beats_per_bar):
    monkeypatch.setenv("SMART_MAA_CHECKPOINT", str(tmp_path / "none.pt"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    prompt = melody([(0, *sig)], prompt_beats)
    prompt.save_midi(tmp_path / "prompt.mid")
    args = ["--model", tiny_model, "--prompt", tmp_path / "prompt.mid", "--candidates", 3, "--bars", 2,
            "--max-tokens", 1000, "--seed", 3, "--out", tmp_path / "out"]
    if prompt_bars:
        args += ["--prompt-bars", prompt_bars]
    code, rows, err = generate(capsys, *args)
    assert code == 0, err
    assert ("1/4 read as 4/4 (bars of 4 beats)" in err) == (sig == (1, 4))
    assert len(rows) == 3
    model_sig = (4, 4) if sig == (1, 4) else sig
    start_beat = kept_beats - 80 / PPQ  # the continuation begins where the prompt's last note ends
    for row in rows:
        assert row["continuation_start_beat"] == start_beat
        assert row["beats_per_bar"] == beats_per_bar and row["time_signature"] == "%d/%d" % model_sig
        assert isinstance(row["bars"], int) and row["bars"] >= 0
        assert row["meter_note"] == ("1/4 read as 4/4 (bars of 4 beats)" if sig == (1, 4) else None)
        clip, _ = Clip.from_midi(row["file"])
        start = round(start_beat * clip.ppq)
        assert [(t.numerator, t.denominator) for t in clip.time_signatures][:1] == [model_sig]
        # prompt + continuation: the prompt's last bars exactly, then only the new notes
        before = [(n.start, n.pitch) for n in clip.notes if n.start < start]
        assert before == [((i - prompt_beats + kept_beats) * PPQ, 60 + (i * 5) % 12)
                          for i in range(prompt_beats - kept_beats, prompt_beats)]
        new = [n for n in clip.notes if n.start >= start]
        assert len(new) == row["notes"] and len({(n.start, n.pitch) for n in new}) == len(new)  # no duplicates
        # features describe the continuation itself, from where it starts
        continuation = clip.slice_ticks(start, max(clip.end_tick, start) + 1)
        assert row["features"] == midi_features(continuation)
        assert row["features"]["n_notes"] == row["notes"]
        if row["finished_by"] == "bars":  # all the bars asked for, and nothing after them
            assert row["bars"] == 2
            end = next_bar_line(start_beat, beats_per_bar) + 2 * beats_per_bar
            assert all(n.start < end * PPQ for n in new)
    assert any(row["finished_by"] == "bars" for row in rows)  # a random model with tokens to spare


def test_generate_procedural_contract(capsys, tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("SMART_MAA_CHECKPOINT", str(tmp_path / "none.pt"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, rows, err = generate(capsys, "--model", tiny_model, "--procedural", "--candidates", 2, "--bars", 2,
                               "--max-tokens", 64, "--seed", 2, "--out", tmp_path / "out")
    assert code == 0, err
    for row in rows:
        clip, _ = Clip.from_midi(row["file"])
        ts = clip.time_signatures[0]
        assert row["continuation_start_beat"] == 0.0 and row["meter_note"] is None
        assert row["beats_per_bar"] == ts.numerator * 4 / ts.denominator
        assert row["features"] == midi_features(clip)


def test_generate_refuses_an_empty_or_drums_only_prompt(capsys, tmp_path, tiny_model):
    Clip([], PPQ, [TempoChange(0, 90.0)], [TimeSignature(0, 3, 4)]).save_midi(tmp_path / "empty.mid")
    score = symusic.Score(PPQ)
    drums = symusic.Track(name="Drums", program=0, is_drum=True)
    for i in range(16):
        drums.notes.append(symusic.Note(i * PPQ, 120, 36 + (i % 2) * 2, 100))
    score.tracks.append(drums)
    score.dump_midi(str(tmp_path / "drums.mid"))
    for name, words in (("empty.mid", "no notes to continue"), ("drums.mid", "drum tracks are not read")):
        code, rows, err = generate(capsys, "--model", tiny_model, "--prompt", tmp_path / name,
                                   "--out", tmp_path / f"out_{name[:-4]}")
        lines = err.strip().splitlines()
        assert code != 0 and rows == [] and len(lines) == 1, err
        assert words in lines[0] and "--procedural" in lines[0] and "Traceback" not in err
        assert not (tmp_path / f"out_{name[:-4]}").exists()


# ---------------------------------------------------------------------------- the host
def test_one_request_re_bars_its_prompt_once(tiny_model, monkeypatch):
    """A /v1/generate prompt is re-barred where it enters the host (`_prepare_prompt`); the policy and the
    tokenizer's prompt builders trust the `ModelClip` they are handed (one request re-barred it 4 times to
    continue and 5 times to infill), and a plain Clip given to the policy is re-barred once, at its entry."""
    import engine.tokenizer
    from engine.host.server import create_app
    from engine.host_client import HostClient
    from engine.meter import ModelClip, model_meter
    from conftest import serve

    re_barred: list[Clip] = []

    def counted(clip, supported):
        if not isinstance(clip, ModelClip):
            re_barred.append(clip)
        return model_meter(clip, supported)

    monkeypatch.setattr(engine.tokenizer, "model_meter", counted)
    clip = pop_clip(8)  # 1/4: the model reads 4-beat bars
    policy = Policy.load(tiny_model)
    settings = GenerationSettings(candidates=1, bars=1, seed=1, max_new_tokens=16)
    with serve(create_app(policy, maa_reason="no MAA weights (test)")) as url, HostClient(url) as client:
        for where in ({"at_tick": 13 * PPQ}, {"infill": (2, 4)}):
            re_barred.clear()
            done = client.generate(prompt_midi=clip.to_midi_bytes(), candidates=1, seed=1, max_new_tokens=16,
                                   score=False, **where).wait()
            assert len(re_barred) == 1 and len(done.candidates) == 1, where
    for generate in (lambda c: policy.continue_clip(c, settings, at_tick=13 * PPQ),
                     lambda c: policy.infill(c, 2, 4, settings)):
        re_barred.clear()
        generate(clip)
        assert re_barred == [clip]


def test_host_reads_the_prompt_in_the_model_meter_and_says_so(tiny_model):
    """The `started` event carries `meter_note`; candidates come back in the model's bars, after the prompt,
    and an infill of bars 3–4 of a 1/4 song rewrites beats 8–16 (bars of 4 beats), not beats 2–4."""
    from engine.host.server import create_app
    from engine.host_client import HostClient, decode_midi
    from conftest import serve

    clip = pop_clip(8)
    app = create_app(Policy.load(tiny_model), maa_reason="no MAA weights (test)")
    with serve(app) as url, HostClient(url) as client:
        with client.generate(prompt_midi=clip.to_midi_bytes(), candidates=2, bars=1, seed=1, max_new_tokens=48,
                             score=False) as stream:
            events = list(stream)
        assert events[0]["event"] == "started" and events[0]["meter_note"] == "1/4 read as 4/4 (bars of 4 beats)"
        for cand in stream.result["candidates"]:
            got = decode_midi(cand["midi"])
            assert [(t.numerator, t.denominator) for t in got.time_signatures] == [(4, 4)]
            assert all(n.start >= clip.end_tick for n in got.notes)
        with client.generate(prompt_midi=clip.to_midi_bytes(), candidates=2, infill=(2, 4),
                             seed=1, max_new_tokens=64, score=False) as stream:
            list(stream)
        for cand in stream.result["candidates"]:
            assert all(8 * PPQ <= n.start < 16 * PPQ for n in decode_midi(cand["midi"]).notes)
        with client.generate(prompt_midi=melody([(0, 3, 4)]).to_midi_bytes(), candidates=1, bars=1,
                             max_new_tokens=8, score=False) as stream:
            assert next(iter(stream))["meter_note"] is None
