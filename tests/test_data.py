"""prepare-data: piano handling, trimming, the paper's filters, split by piece, cache/resume, augmentation."""

import json
import random

import numpy as np
import pytest
import symusic

from engine.music import Clip, Note, TempoChange, TimeSignature
from engine.tokenizer import RemiTokenizer
from training import data as data_mod
from training.data import (
    SPLITS,
    TokenAugmenter,
    TokenSplit,
    canonical_pieces,
    find_midi_files,
    melody_ngrams,
    piece_family,
    prepare,
    process_file,
    split_of,
    trim_leading_empty_bars,
)

CHORDS = [[0, 4, 7], [5, 9, 12], [7, 11, 14], [0, 4, 7]]  # I IV V I


def arpeggio_piece(seed: int, bars: int = 12, lead_in_bars: int = 0, velocity_jitter: int = 0) -> Clip:
    """A learnable procedural piece: a chord progression arpeggiated in eighths in a random key.

    velocity_jitter > 0 gives a different "performance" of the same notes.
    """
    rng = random.Random(seed)
    root = rng.randint(48, 60)
    bpm = rng.choice([90.0, 120.0])
    vel_rng = random.Random(seed * 7919 + velocity_jitter)
    notes = []
    for bar in range(bars):
        chord = CHORDS[bar % len(CHORDS)]
        t0 = (bar + lead_in_bars) * 1920
        notes.append(Note(t0, root - 12 + chord[0], 1920, 70))  # bass note held for the bar
        for k in range(8):
            pitch = root + chord[k % 3] + (12 if k >= 3 else 0)
            vel = 80 + (vel_rng.randint(-velocity_jitter, velocity_jitter) if velocity_jitter else 0)
            notes.append(Note(t0 + k * 240, pitch, 240, vel))
    return Clip(notes, 480, [TempoChange(0, bpm)], [TimeSignature(0, 4, 4)])


def write_non_piano(path) -> None:
    """A file whose only track is a violin (GM program 41): no piano to keep."""
    score = symusic.Score(480)
    track = symusic.Track(name="Violin", program=40, is_drum=False)
    for i in range(16):
        track.notes.append(symusic.Note(i * 480, 480, 60 + i % 12, 80))
    score.tracks.append(track)
    score.dump_midi(str(path))


def make_corpus(root, pieces: int = 16, performances: int = 2) -> dict:
    """Folders of pieces (each with `performances` files), one corrupt file, one non-piano file."""
    root.mkdir(parents=True, exist_ok=True)
    for p in range(pieces):
        folder = root / f"piece{p:02d}"
        folder.mkdir()
        for k in range(performances):
            # The first performance opens with two empty bars: prepare-data must trim them.
            arpeggio_piece(p, lead_in_bars=2 if k == 0 else 0, velocity_jitter=k * 10).save_midi(folder / f"perf{k}.mid")
    (root / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff\xff\xffgarbage")
    (root / "not_midi.mid").write_bytes(b"hello, I am a text file")
    write_non_piano(root / "strings.mid")
    return {"pieces": pieces, "performances": performances, "bad": ["corrupt.mid", "not_midi.mid", "strings.mid"]}


@pytest.fixture(scope="module")
def tok():
    return RemiTokenizer()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "mini"
    info = make_corpus(root)
    out = tmp_path_factory.mktemp("data")
    manifest = prepare([root], out, workers=1, val_frac=0.25, test_frac=0.25, seed=0, progress=False)
    return root, out, manifest, info


def test_manifest_reports_corrupt_and_non_piano_files(prepared):
    root, out, manifest, info = prepared
    skipped = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {f"mini/{name}" for name in info["bad"]}
    assert skipped["mini/strings.mid"].startswith("no piano notes")
    assert skipped["mini/corrupt.mid"].startswith("unreadable")
    assert skipped["mini/not_midi.mid"].startswith("unreadable")
    expected = info["pieces"] * info["performances"]
    assert manifest["files_found"] == expected + len(info["bad"])
    assert manifest["files_used"] == expected
    assert sum(manifest["splits"][s]["files"] for s in SPLITS) == expected
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_split_by_piece_keeps_performances_together(prepared):
    _root, out, manifest, info = prepared
    index = json.loads((out / "index.json").read_text())
    split_of_piece: dict[str, set] = {}
    for split in SPLITS:
        for _off, _n, piece, _file, _canonical in index[split]:
            split_of_piece.setdefault(piece, set()).add(split)
    assert len(split_of_piece) == info["pieces"]
    assert all(len(s) == 1 for s in split_of_piece.values()), split_of_piece
    # With 16 pieces and 25 %/25 %, every split gets at least one piece (fixed hash, seed 0).
    assert all(manifest["splits"][s]["pieces"] >= 1 for s in SPLITS)
    assert manifest["splits"]["train"]["files"] == 2 * manifest["splits"]["train"]["pieces"]


def test_token_files_hold_the_trimmed_encodings(prepared, tok):
    root, out, manifest, _info = prepared
    for split in SPLITS:
        part = TokenSplit(out, split)
        assert part.tokens.dtype == np.uint16
        assert len(part.tokens) == manifest["splits"][split]["tokens"] == part.num_tokens
        for i, seq_info in enumerate(part.sequences):
            clip, _ = Clip.from_midi(root.parent / seq_info.file, mode="piano")
            expected = tok.encode(trim_leading_empty_bars(clip))
            assert part[i].tolist() == expected
            # Sequences start on the bar of the first note: Bar TimeSig Position_0 Tempo Pitch…
            assert tok.ids_to_tokens(expected[:5])[4].startswith("Pitch_")
    assert RemiTokenizer.load(out).vocab == tok.vocab


def test_leading_empty_bars_are_trimmed(tok):
    clip = arpeggio_piece(3, bars=4, lead_in_bars=3)
    trimmed = trim_leading_empty_bars(clip)
    assert trimmed.notes[0].start == 0 and trimmed.num_bars == 4
    assert trimmed.bpm == clip.bpm
    assert [n.pitch for n in trimmed.notes] == [n.pitch for n in clip.notes]
    ids = tok.encode(trimmed)
    assert sum(1 for t in ids if t == tok.bar_id) == 4


def test_paper_filters(tmp_path, tok):
    dense = Clip([Note(i, 21 + i % 88, 10) for i in range(400)], 480)  # 400 notes in one bar
    dense.save_midi(tmp_path / "dense.mid")
    result = process_file(tmp_path / "dense.mid", tok)
    assert result.ids is None and result.reason.startswith("too dense: 400 notes")
    # 10 bars, 3 of them empty (30 % > 20 %).
    sparse = Clip([Note(b * 1920, 60, 480) for b in range(10) if b not in (2, 4, 6)], 480)
    sparse.save_midi(tmp_path / "sparse.mid")
    result = process_file(tmp_path / "sparse.mid", tok)
    assert result.ids is None and "30% empty bars" in result.reason
    ok = Clip([Note(b * 1920, 60, 480) for b in range(10) if b != 5], 480)  # 10 % empty: kept
    ok.save_midi(tmp_path / "ok.mid")
    assert process_file(tmp_path / "ok.mid", tok).ids is not None


def test_split_hash_is_deterministic_and_proportional():
    pieces = [f"set/piece{i}" for i in range(20000)]
    splits = [split_of(p, 0.05, 0.05) for p in pieces]
    assert splits == [split_of(p, 0.05, 0.05) for p in pieces]
    share = {s: splits.count(s) / len(splits) for s in SPLITS}
    assert abs(share["val"] - 0.05) < 0.01 and abs(share["test"] - 0.05) < 0.01
    assert [split_of(p, 0.05, 0.05, seed=1) for p in pieces[:200]] != splits[:200]


def test_piece_ids(tmp_path):
    (tmp_path / "asap" / "Bach" / "Fugue" / "bwv_846").mkdir(parents=True)
    for name in ("midi_score.mid", "Perf01.mid"):
        (tmp_path / "asap" / "Bach" / "Fugue" / "bwv_846" / name).write_bytes(b"x")
    (tmp_path / "asap" / "loose.MID").write_bytes(b"x")
    (tmp_path / "asap" / "notes.txt").write_bytes(b"x")
    found = find_midi_files([tmp_path / "asap"])
    assert [(s.name, s.piece) for s in found] == [
        ("asap/Bach/Fugue/bwv_846/Perf01.mid", "asap/Bach/Fugue/bwv_846"),
        ("asap/Bach/Fugue/bwv_846/midi_score.mid", "asap/Bach/Fugue/bwv_846"),
        ("asap/loose.MID", "asap/loose"),  # files directly in a scanned root are their own piece
    ]


def melody_piece(seed: int, transpose: int = 0, bars: int = 12, velocity: int = 80) -> Clip:
    """A random-walk melody in eighths over a held bass: every seed is another song."""
    rng = random.Random(seed)
    pitch, notes = 72, []
    for k in range(bars * 8):
        pitch = min(96, max(60, pitch + rng.choice([-5, -3, -2, -1, 1, 2, 3, 4, 7])))
        notes.append(Note(k * 240, pitch + transpose, 240, velocity))
        if k % 8 == 0:
            notes.append(Note(k * 240, 40 + rng.randint(0, 7), 1920, 60))
    return Clip(notes, 480, [TempoChange(0, 100.0)], [TimeSignature(0, 4, 4)])


def test_piece_family_folds_asap_repeat_variants():
    assert piece_family("asap/Beethoven/Piano_Sonatas/17-1_no_repeat") == "asap/Beethoven/Piano_Sonatas/17-1"
    assert piece_family("asap/Beethoven/Piano_Sonatas/24-1_no_2_repeat") == "asap/Beethoven/Piano_Sonatas/24-1"
    assert piece_family("asap/Schumann/Kreisleriana/1_no_first_repeat") == "asap/Schumann/Kreisleriana/1"
    assert piece_family("asap/Schumann/Toccata_repeat") == "asap/Schumann/Toccata"
    assert piece_family("asap/Liszt/Etudes/6_Theme_and_Variations_repeat") == "asap/Liszt/Etudes/6_Theme_and_Variations"
    assert piece_family("pop909/017") == "pop909/017"
    assert piece_family("asap/Bach/Fugue/bwv_846") == "asap/Bach/Fugue/bwv_846"


def test_melody_ngrams_ignore_transposition_and_accompaniment(tok):
    song = melody_ngrams(tok.encode(melody_piece(1)), tok)
    assert len(song) > 50
    rearranged = melody_piece(1, transpose=3, velocity=50)
    rearranged.notes[:] = [n for n in rearranged.notes if n.duration < 1920]  # no bass: another arrangement
    again = melody_ngrams(tok.encode(rearranged), tok)
    other = melody_ngrams(tok.encode(melody_piece(2)), tok)
    assert len(song & again) / len(song | again) > 0.9
    assert len(song & other) / len(song | other) < 0.1


def test_no_canonical_piece_spans_two_splits(tmp_path, tok):
    """ASAP repeat variants and a song arranged twice (POP909's 017/018) land in one split."""
    root = tmp_path / "set"
    for seed in range(24):
        (root / f"song{seed:02d}").mkdir(parents=True)
        melody_piece(100 + seed).save_midi(root / f"song{seed:02d}" / "a.mid")
    # Song 00 arranged again elsewhere (transposed, softer), and song 01 played without its repeat.
    (root / "song99").mkdir()
    melody_piece(100, transpose=-2, velocity=50).save_midi(root / "song99" / "b.mid")
    (root / "song01_no_repeat").mkdir()
    melody_piece(101, bars=8).save_midi(root / "song01_no_repeat" / "p.mid")
    out = tmp_path / "data"
    manifest = prepare([root], out, workers=1, val_frac=0.3, test_frac=0.3, progress=False)
    index = json.loads((out / "index.json").read_text())
    split_of_canonical: dict[str, set] = {}
    canonical_of = {}
    for split in SPLITS:
        for _off, _n, piece, _file, canonical in index[split]:
            split_of_canonical.setdefault(canonical, set()).add(split)
            canonical_of[piece] = canonical
    assert all(len(s) == 1 for s in split_of_canonical.values()), split_of_canonical
    assert canonical_of["set/song99"] == canonical_of["set/song00"] == "set/song00"
    assert canonical_of["set/song01_no_repeat"] == canonical_of["set/song01"] == "set/song01"
    assert len(split_of_canonical) == 24  # every other song is its own piece
    assert manifest["merged_pieces"] == {"set/song00": ["set/song00", "set/song99"],
                                         "set/song01": ["set/song01", "set/song01_no_repeat"]}
    assert sum(manifest["splits"][s]["pieces"] for s in SPLITS) == 24
    # The grouping itself is transitive and named by the smallest member.
    assert canonical_pieces({"x/b": {1, 2, 3}, "x/c": {2, 3, 4}, "x/a": {3, 4, 5}}, threshold=0.5) == {
        "x/a": "x/a", "x/b": "x/a", "x/c": "x/a"}


def test_rerun_resumes_from_the_per_file_cache(tmp_path, monkeypatch):
    root = tmp_path / "c"
    make_corpus(root, pieces=4)
    out = tmp_path / "d"
    first = prepare([root], out, workers=1, val_frac=0.25, test_frac=0.25, progress=False)
    first_bytes = {s: (out / f"{s}.bin").read_bytes() for s in SPLITS}
    # Simulate a run killed half-way: part of the journal is missing, the rest is reused.
    entries = sorted((out / "cache").glob("*.npz"))
    for entry in entries[: len(entries) // 2]:
        entry.unlink()
    calls = []
    real = data_mod.process_file

    def counting(path, tokenizer):
        calls.append(path)
        return real(path, tokenizer)

    monkeypatch.setattr(data_mod, "process_file", counting)
    second = prepare([root], out, workers=1, val_frac=0.25, test_frac=0.25, progress=False)
    assert len(calls) == len(entries) // 2
    assert {s: (out / f"{s}.bin").read_bytes() for s in SPLITS} == first_bytes
    assert {k: v for k, v in second.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}


@pytest.mark.slow  # ~15 s on a quiet core: two worker processes each import the model stack
def test_parallel_workers_give_the_same_data(tmp_path):
    root = tmp_path / "c"
    make_corpus(root, pieces=4)
    serial = prepare([root], tmp_path / "serial", workers=1, val_frac=0.25, test_frac=0.25, progress=False)
    parallel = prepare([root], tmp_path / "parallel", workers=2, val_frac=0.25, test_frac=0.25, progress=False)
    assert serial["splits"] == parallel["splits"] and serial["skipped"] == parallel["skipped"]
    for s in SPLITS:
        assert (tmp_path / "serial" / f"{s}.bin").read_bytes() == (tmp_path / "parallel" / f"{s}.bin").read_bytes()


def test_cli_prints_a_summary_and_lists_skips(tmp_path, capsys):
    root = tmp_path / "c"
    make_corpus(root, pieces=2)
    code = data_mod.main(["prepare-data", str(root), "--out", str(tmp_path / "d"), "--workers", "1", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out)
    assert summary["files_used"] == 4 and summary["files_skipped"] == 3
    assert "skipped c/corrupt.mid: unreadable" in captured.err
    assert data_mod.main(["prepare-data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e")]) == 2


# ---------------------------------------------------------------------------- augmentation
def test_transposition_shifts_pitch_ids_only(tok):
    aug = TokenAugmenter(tok)
    ids = np.array(tok.encode(arpeggio_piece(1, bars=4)))
    up = aug.transpose(ids, 3)
    is_pitch = np.isin(ids, tok.kind_ids["Pitch"])
    assert (up[~is_pitch] == ids[~is_pitch]).all()
    before = [tok.token_value(int(i)) for i in ids[is_pitch]]
    after = [tok.token_value(int(i)) for i in up[is_pitch]]
    assert after == [p + 3 for p in before]
    assert tok.decode(up).notes == tok.decode(ids).transposed(3).notes


def test_transposition_never_leaves_the_keyboard(tok):
    aug = TokenAugmenter(tok, max_transpose=5)
    edge = Clip([Note(0, 21, 480), Note(480, 106, 480)], 480)
    ids = np.array(tok.encode(edge))
    assert aug.transpose(ids, -1) is None and aug.transpose(ids, 3) is None
    rng = np.random.default_rng(0)
    shifts = set()
    for _ in range(50):
        out = aug.random_transpose(ids, rng)
        pitches = [tok.token_value(int(i)) for i in out if tok.token_kind(int(i)) == "Pitch"]
        assert 21 <= min(pitches) and max(pitches) <= 108
        shifts.add(pitches[0] - 21)
    assert shifts == {0, 1, 2}  # only the shifts that keep 21 and 106 on the keyboard


def test_tempo_jitter_scales_tempo_tokens(tok):
    aug = TokenAugmenter(tok)
    clip = Clip([Note(0, 60, 480), Note(1920, 62, 480)], 480, [TempoChange(0, 100.0), TempoChange(1920, 200.0)])
    ids = np.array(tok.encode(clip))
    out = aug.jitter_tempo(ids, 1.1)
    tempos = [tok.token_value(int(i)) for i in out if tok.token_kind(int(i)) == "Tempo"]
    assert tempos == [110.0, 220.0]
    is_tempo = np.isin(ids, tok.kind_ids["Tempo"])
    assert (out[~is_tempo] == ids[~is_tempo]).all()
    assert [tok.token_value(int(i)) for i in aug.jitter_tempo(ids, 2.0) if tok.token_kind(int(i)) == "Tempo"] == [200.0, 250.0]
