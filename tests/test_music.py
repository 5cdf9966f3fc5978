import mido
import pytest

from engine.music import Clip, MidiFileError, Note, TempoChange, TimeSignature, dedupe_notes


def make_multitrack_midi(path, programs=(0, 0, 40), drum=True):
    mid = mido.MidiFile(ticks_per_beat=480)
    for i, program in enumerate(programs):
        tr = mido.MidiTrack()
        tr.append(mido.MetaMessage("track_name", name=f"t{i}"))
        tr.append(mido.Message("program_change", program=program, channel=i))
        tr.append(mido.Message("note_on", note=60 + i, velocity=90, channel=i, time=0))
        tr.append(mido.Message("note_off", note=60 + i, velocity=0, channel=i, time=480))
        mid.tracks.append(tr)
    if drum:
        tr = mido.MidiTrack()
        tr.append(mido.Message("note_on", note=36, velocity=100, channel=9, time=0))
        tr.append(mido.Message("note_off", note=36, channel=9, time=240))
        mid.tracks.append(tr)
    mid.save(path)


def test_roundtrip_keeps_every_note(tmp_path):
    notes = [Note(i * 120, 40 + (i * 7) % 50, 60 + i % 200, 20 + i % 100) for i in range(500)]
    clip = Clip(notes, 480, [TempoChange(0, 96.0), TempoChange(4800, 132.0)],
                [TimeSignature(0, 3, 4), TimeSignature(1440 * 4, 6, 8)])
    clip.save_midi(tmp_path / "a.mid")
    back, report = Clip.from_midi(tmp_path / "a.mid")
    assert back.notes == clip.notes
    assert [(t.tick, t.bpm) for t in back.tempos] == [(0, 96.0), (4800, 132.0)]
    assert back.time_signatures == clip.time_signatures
    assert report.duplicates_removed == 0


def test_user_mode_imports_non_drum_tracks_as_piano_and_says_so(tmp_path):
    make_multitrack_midi(tmp_path / "m.mid")
    clip, report = Clip.from_midi(tmp_path / "m.mid", mode="user")
    assert sorted(n.pitch for n in clip.notes) == [60, 61, 62]
    assert "non-piano instruments imported as piano" in report.summary()
    assert any("drums" in d for d in report.tracks_dropped)


def test_piano_mode_keeps_only_gm_piano_programs(tmp_path):
    make_multitrack_midi(tmp_path / "m.mid")
    clip, report = Clip.from_midi(tmp_path / "m.mid", mode="piano")
    assert sorted(n.pitch for n in clip.notes) == [60, 61]
    assert any("not piano" in d for d in report.tracks_dropped)


def test_duplicates_dropped():
    notes = [Note(0, 60, 100, 80), Note(0, 60, 200, 70), Note(0, 62, 100, 80)]
    assert dedupe_notes(notes) == [Note(0, 60, 200, 70), Note(0, 62, 100, 80)]


@pytest.mark.parametrize("data, message", [
    (b"", "not a Standard MIDI File"),
    (b"RIFF1234WAVEfmt ", "not a Standard MIDI File"),
    (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x00MTrk\x00\x00\x00\x00", "0 ticks per quarter"),
    (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0", "truncated"),
])
def test_bad_files_get_clear_errors(data, message):
    with pytest.raises(MidiFileError, match=message):
        Clip.from_midi(data)


def _read_or_refuse(data: bytes) -> Clip | None:
    """The clip read from `data`, or None when it is refused with a MidiFileError (any other exception
    fails the test: a damaged file must get a clear error, never a crash)."""
    try:
        clip, _report = Clip.from_midi(data)
    except MidiFileError:
        return None
    return clip


def test_truncated_and_random_bytes(tmp_path):
    clip = Clip([Note(i * 10, 60, 10, 80) for i in range(100)])
    data = clip.to_midi_bytes()
    for cut in (20, 40, len(data) // 2):
        read = _read_or_refuse(data[:cut])  # a clear error is fine; recovering the readable part is fine too
        assert read is None or set(read.notes) <= set(clip.notes)
    import random
    rng = random.Random(1)
    for _ in range(200):
        junk = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        read = _read_or_refuse(junk)
        assert read is None or all(0 <= n.pitch <= 127 and n.duration >= 1 for n in read.notes)


def test_absurd_tempo_and_too_many_notes(tmp_path):
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    tr.append(mido.MetaMessage("set_tempo", tempo=1))  # 60,000,000 bpm
    tr.append(mido.Message("note_on", note=60, velocity=90))
    tr.append(mido.Message("note_off", note=60, time=100))
    mid.tracks.append(tr)
    mid.save(tmp_path / "t.mid")
    with pytest.raises(MidiFileError, match="absurd tempo"):
        Clip.from_midi(tmp_path / "t.mid")
    big = Clip([Note(i, 21 + i % 88, 5, 80) for i in range(100_000)])
    with pytest.raises(MidiFileError, match="too many notes"):
        Clip.from_midi(big.to_midi_bytes())


def test_time_maps_and_bars():
    clip = Clip([Note(0, 60, 480)], 480, [TempoChange(0, 60.0), TempoChange(960, 120.0)],
                [TimeSignature(0, 4, 4), TimeSignature(1920 * 2, 3, 4)])
    assert clip.seconds_at(960) == pytest.approx(2.0)
    assert clip.seconds_at(1920) == pytest.approx(3.0)
    assert clip.tick_at(3.0) == 1920
    assert clip.bar_starts(3840 + 1440 * 2) == [0, 1920, 3840, 3840 + 1440, 3840 + 2880]
    assert clip.bar_tick(5) == 3840 + 1440 * 3


def test_sustain_pedal_extends_notes(tmp_path):
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    tr.append(mido.Message("control_change", control=64, value=127))
    tr.append(mido.Message("note_on", note=60, velocity=90))
    tr.append(mido.Message("note_off", note=60, time=100))
    tr.append(mido.Message("control_change", control=64, value=0, time=900))
    mid.tracks.append(tr)
    mid.save(tmp_path / "p.mid")
    clip, report = Clip.from_midi(tmp_path / "p.mid")
    assert clip.notes[0].duration == 1000 and report.pedal_extended == 1
