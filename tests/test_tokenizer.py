import random

import miditok
import numpy as np
import pytest

from engine.music import Clip, Note, TempoChange, TimeSignature
from engine.tokenizer import RemiTokenizer


@pytest.fixture(scope="module")
def tok():
    return RemiTokenizer()


def random_clip(seed, ts=(4, 4), bpm=100.0, n=120):
    rng = random.Random(seed)
    notes = []
    t = 0
    for _ in range(n):
        t += rng.choice([0, 60, 120, 240, 480])
        notes.append(Note(t, rng.randint(30, 100), rng.choice([60, 120, 240, 480, 960]), rng.randint(20, 127)))
    return Clip(notes, 480, [TempoChange(0, bpm)], [TimeSignature(0, *ts)])


def test_vocabulary_matches_the_spec(tok):
    tokens = set(tok.vocab)
    assert {f"Pitch_{p}" for p in range(21, 109)} <= tokens and "Pitch_20" not in tokens and "Pitch_109" not in tokens
    assert len([t for t in tokens if t.startswith("Velocity_")]) == 20
    for bpm in (40, 60, 72, 96, 120, 126, 132, 250):
        assert f"Tempo_{float(bpm)}" in tokens
    for ts in ["2/4", "3/4", "4/4", "5/4", "6/4", "3/8", "6/8", "9/8", "12/8", "2/2", "3/2"]:
        assert f"TimeSig_{ts}" in tokens
    for special in ["PAD_None", "BOS_None", "EOS_None", "FIMPrefix_None", "FIMSuffix_None", "FIMMiddle_None"]:
        assert special in tokens


def test_config_saved_and_reloaded_identically(tok, tmp_path):
    tok.save(tmp_path)
    again = RemiTokenizer.load(tmp_path)
    assert again.vocab == tok.vocab
    clip = random_clip(3)
    assert again.encode(clip) == tok.encode(clip)


def test_hf_bridge_round_trip(tok, tmp_path):
    ids = tok.encode(random_clip(4))
    hf = tok.hf_tokenizer()
    text = tok.ids_to_text(ids)
    assert hf(text, add_special_tokens=False)["input_ids"] == ids
    assert tok.text_to_ids(hf.decode(ids)) == ids
    assert hf.pad_token_id == tok.pad_id and hf.eos_token_id == tok.eos_id
    tok.save(tmp_path)
    from transformers import AutoTokenizer
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids


@pytest.mark.parametrize("ts", [(4, 4), (3, 4), (6, 8), (12, 8), (2, 2), (5, 4)])
def test_decoder_matches_miditok(tok, ts):
    clip = random_clip(hash(ts) % 1000, ts=ts, bpm=90.0)
    ids = tok.encode(clip)
    ref = tok.remi.decode([miditok.TokSequence(ids=ids)])
    dec = tok.decoder(ppq=tok.time_division)
    dec.feed_many(ids)
    mine = dec.clip()
    ref_notes = sorted((n.start, n.pitch, n.duration, n.velocity) for tr in ref.tracks for n in tr.notes)
    mine_notes = sorted((n.start, n.pitch, n.duration, n.velocity) for n in mine.notes)
    # MidiTok keeps same-onset same-pitch duplicates; the decoder keeps the first of each.
    assert {n[:2] for n in mine_notes} == {n[:2] for n in ref_notes}
    assert len(mine_notes) == len({n[:2] for n in mine_notes}) and set(mine_notes) <= set(ref_notes)
    assert dec.duplicates == len(ref_notes) - len(mine_notes)
    assert [(t.time, t.numerator, t.denominator) for t in ref.time_signatures] == \
        [(t.tick, t.numerator, t.denominator) for t in mine.time_signatures]


def test_encode_decode_preserves_quantized_music(tok):
    clip = random_clip(7)
    back = tok.decode(tok.encode(clip), ppq=480)
    assert len(back.notes) == len({(n.start, n.pitch) for n in clip.notes})  # duplicates dropped
    assert back.bpm == 100.0
    # 32nd-note grid at 480 ppq = 60 ticks: everything in random_clip is on it.
    assert {(n.start, n.pitch) for n in back.notes} == {(n.start, n.pitch) for n in clip.notes}


def test_decoding_never_crashes_on_random_ids(tok):
    rng = np.random.default_rng(0)
    total_notes = 0
    for _ in range(3000):
        n = int(rng.integers(0, 300))
        ids = rng.integers(-10, tok.vocab_size + 10, size=n).tolist()
        clip = tok.decode(ids)
        total_notes += len(clip.notes)
        for note in clip.notes:
            assert 21 <= note.pitch <= 108 and note.duration > 0 and note.start >= 0
    assert total_notes > 0  # random sequences do contain recoverable Pitch-Velocity-Duration runs
    assert tok.decode([]).notes == []


def test_streaming_yields_each_note_when_its_duration_arrives(tok):
    ids = tok.encode(random_clip(9, n=30))
    dec = tok.decoder()
    emitted_at = []
    for i, t in enumerate(ids):
        for _ in dec.feed(t):
            emitted_at.append(i)
    duration_positions = [i for i, t in enumerate(ids) if tok.token_kind(t) == "Duration"]
    assert emitted_at == duration_positions
    assert dec.clip().notes == tok.decode(ids).notes


def test_grammar_masked_sampling_gives_valid_sequences(tok):
    rng = np.random.default_rng(1)
    for _ in range(20):
        g = tok.grammar()
        ids = tok.procedural_prompt(random.Random(int(rng.integers(1e6))))[1:]
        g.observe_many(ids)
        for _ in range(300):
            allowed = np.flatnonzero(g.allowed())
            t = int(rng.choice(allowed))
            if t == tok.eos_id:
                break
            ids.append(t)
            g.observe(t)
        seq = miditok.TokSequence(ids=ids)
        tok.remi.complete_sequence(seq)
        assert tok.remi.tokens_errors(seq) == 0
        dec = tok.decoder()
        notes = dec.feed_many(ids)
        key = lambda n: (n.start, n.pitch, n.duration, n.velocity)  # noqa: E731
        assert dec.n_invalid == 0 and sorted(notes, key=key) == sorted(tok.decode(ids).notes, key=key)  # as decoded whole


def test_key_lock_masks_pitches(tok):
    g = tok.grammar()
    g.observe_many(tok.procedural_prompt(random.Random(0))[1:])
    g.allowed_pitches = np.zeros(128, dtype=bool)
    g.allowed_pitches[[60, 62, 64]] = True
    allowed = {tok.id_to_token[i] for i in np.flatnonzero(g.allowed())}
    assert {t for t in allowed if t.startswith("Pitch")} == {"Pitch_60", "Pitch_62", "Pitch_64"}


def test_procedural_prompt_is_paper_style(tok):
    ids = tok.procedural_prompt(random.Random(5))
    kinds = [tok.token_kind(i) for i in ids]
    assert kinds == ["BOS", "Bar", "TimeSig", "Position", "Tempo"]


def test_infill_prompt_layout(tok):
    clip = random_clip(11, n=80)
    ids = tok.infill_prompt(clip, 2, 4)
    assert ids[0] == tok.fim_prefix_id and ids[-1] == tok.fim_middle_id
    pre = ids[1:ids.index(tok.fim_suffix_id)]
    assert sum(1 for t in pre if t == tok.bar_id) == 2


def test_continuation_prompt_opens_the_playhead_bar(tok):
    clip = Clip([Note(0, 60, 480)], 480)
    ids = tok.continuation_prompt(clip, at_tick=1920 * 3)  # playhead on the line of bar 4
    assert sum(1 for t in ids if t == tok.bar_id) == 4
    assert tok.position_floor(clip, 1920 * 3) == 0
    dec = tok.decoder()
    dec.feed_many(ids)
    dec.feed_many([tok.vocab["Position_0"], tok.vocab["Pitch_64"], tok.vocab["Velocity_63"], tok.vocab["Duration_1.0.8"]])
    assert dec.notes[-1].start == 1920 * 3


def test_grammar_keeps_continuations_after_the_playhead(tok):
    clip = Clip([Note(0, 60, 480)], 480)
    at = 960  # beat 3 of bar 1: position 16 at 8 positions per beat
    ids = tok.continuation_prompt(clip, at)
    g = tok.grammar()
    g.observe_many(ids)
    g.min_position = tok.position_floor(clip, at)
    assert g.min_position == 16
    allowed = [tok.id_to_token[i] for i in np.flatnonzero(g.allowed())]
    assert not any(t.startswith("Pitch") for t in allowed)
    assert min(int(t.split("_")[1]) for t in allowed if t.startswith("Position")) == 16
