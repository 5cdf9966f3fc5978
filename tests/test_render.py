"""Tests for engine.render: SoundFont rendering, reset between renders, the pool, WAV I/O."""

from __future__ import annotations

import importlib.util
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engine.music import Clip, Note, TempoChange
from engine.render import (
    DEFAULT_SOUNDFONT,
    RELEASE_TAIL_SECONDS,
    AudioFileError,
    RenderError,
    TSF_ENVELOPE_BLOCK,
    SoundFontError,
    load_synth,
    load_wav,
    render,
    render_many,
    reset_synth,
    save_wav,
)

PPQ = 480
REPO_ROOT = Path(__file__).resolve().parents[1]
FLUID_SOURCE = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
# musescore-general-soundfont-small (34 MB) ships this one; the full package ships MuseScore_General_Full.sf3.
MUSESCORE_SOURCE = next((p for p in (Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),
                                     Path("/usr/share/sounds/sf3/MuseScore_General_Full.sf3")) if p.is_file()),
                        Path("/usr/share/sounds/sf3/MuseScore_General.sf3"))


def clip_at(bpm: float, notes: list[tuple[float, int, float, int]], tempos=None) -> Clip:
    """Notes given as (start_beat, pitch, beats, velocity)."""
    return Clip(
        [Note(int(round(s * PPQ)), p, int(round(d * PPQ)), v) for s, p, d, v in notes],
        PPQ,
        tempos or [TempoChange(0, bpm)],
    )


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def onset(audio: np.ndarray, threshold: float = 0.0) -> int:
    return int(np.flatnonzero(np.abs(audio) > threshold)[0])


def loud_clip() -> Clip:
    """A fortissimo cluster still sounding when the render is cropped."""
    return clip_at(120, [(0, p, 16, 127) for p in range(36, 96, 2)])


def load_build_script():
    spec = importlib.util.spec_from_file_location("build_soundfont", REPO_ROOT / "scripts" / "build_soundfont.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------- basic rendering
def test_shipped_soundfont_loads_with_piano_on_channel_0():
    assert DEFAULT_SOUNDFONT.is_file()
    assert DEFAULT_SOUNDFONT.stat().st_size < 15_000_000
    synth = load_synth()
    sfid, bank, preset = synth.program_info(0)
    assert (bank, preset) == (0, 0)
    assert "Piano" in synth.sfpreset_name(sfid, 0, 0)


def test_sound_where_notes_are_and_silence_where_none():
    # 60 bpm: a note over [1 s, 1.5 s), nothing from ~2.5 s (release done) to 5 s, a note at 5 s.
    clip = clip_at(60, [(1, 60, 0.5, 90), (5, 67, 1, 90)])
    audio = render(clip, sample_rate=16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    sr = 16000
    assert np.all(audio[: 1 * sr] == 0.0)  # before the first note: exact digital silence
    assert rms(audio[1 * sr : int(1.5 * sr)]) > 0.01
    assert np.max(np.abs(audio[int(3.0 * sr) : 5 * sr])) < 1e-3  # release has died away
    assert rms(audio[5 * sr : 6 * sr]) > 0.01
    assert np.max(np.abs(audio)) <= 1.0


def test_note_on_is_sample_accurate():
    # 60 bpm, PPQ 480, 48 kHz: one tick is exactly 100 samples. Moving a note by one tick must
    # move its audio by exactly 100 samples, with identical samples (no chunk-grid jitter).
    sr = 48000
    at_beat_1 = render(clip_at(60, [(1, 60, 1, 100)]), sr, seconds=3.0)
    one_tick_later = render(Clip([Note(PPQ + 1, 60, PPQ, 100)], PPQ, [TempoChange(0, 60.0)]), sr, seconds=3.0)
    assert not at_beat_1[:sr].any() and not one_tick_later[: sr + 100].any()
    np.testing.assert_array_equal(one_tick_later[sr + 100 :], at_beat_1[sr:-100])
    # TinySoundFont steps envelopes per 64-sample block, so an attack is silent for its first
    # block: the first non-zero sample lies within that block after the note-on sample.
    for rate in (16000, 44100):
        audio = render(clip_at(60, [(0.7, 60, 1, 100)]), rate)
        assert 0 <= onset(audio) - round(0.7 * rate) <= TSF_ENVELOPE_BLOCK


def test_length_cropping_and_release_tail():
    clip = clip_at(120, [(0, 60, 4, 80), (8, 64, 4, 80)])  # last note-off at 6 s
    assert len(render(clip, 16000, seconds=2.5)) == 40000
    assert len(render(clip, 48000, seconds=2.5)) == 120000
    assert len(render(clip, 16000, seconds=0)) == 0
    full = render(clip, 44100)
    assert len(full) == round((6.0 + RELEASE_TAIL_SECONDS) * 44100)
    # Cropping cuts the same audio, it does not change it.
    np.testing.assert_array_equal(render(clip, 44100, seconds=3.0), full[: 3 * 44100])
    # Longer than the clip: padded with silence.
    long = render(clip, 16000, seconds=10)
    assert len(long) == 160000 and np.all(long[int(7.5 * 16000) :] == 0.0)


def test_empty_clip_renders_silence():
    audio = render(Clip([], PPQ), 16000)
    assert len(audio) == round(RELEASE_TAIL_SECONDS * 16000) and not audio.any()


def test_tempo_map_is_followed():
    # Beat 4 at 60 bpm starts at 4 s.
    audio = render(clip_at(60, [(4, 60, 1, 100)]), 16000)
    assert abs(onset(audio) / 16000 - 4.0) < 0.005  # within one 64-sample envelope block
    # 120 bpm for 2 beats (1 s), then 60 bpm: beat 4 starts at 1 + 2 = 3 s.
    tempos = [TempoChange(0, 120.0), TempoChange(2 * PPQ, 60.0)]
    clip = clip_at(0, [(4, 60, 1, 100)], tempos=tempos)
    audio = render(clip, 16000)
    assert clip.seconds_at(4 * PPQ) == pytest.approx(3.0)
    assert abs(onset(audio) / 16000 - 3.0) < 0.005


def test_velocity_changes_loudness():
    soft = render(clip_at(120, [(0, 60, 2, 30)]), 16000, seconds=1.0)
    loud = render(clip_at(120, [(0, 60, 2, 110)]), 16000, seconds=1.0)
    assert rms(loud) > 2.0 * rms(soft) > 0


def test_mono_render_is_the_mean_of_the_stereo_synth_output():
    clip = clip_at(60, [(0, 48, 1, 100), (0, 67, 1, 80)])
    mono = render(clip, 16000, seconds=1.0)
    synth = load_synth(sample_rate=16000)
    synth.noteon(0, 48, 100)
    synth.noteon(0, 67, 80)
    stereo = np.frombuffer(synth.generate(16000), dtype=np.float32).reshape(-1, 2)
    np.testing.assert_allclose(mono, stereo.mean(axis=1), atol=1e-5)


def test_repeated_pitch_restrikes():
    # Back-to-back notes of one pitch: the second note-on must not be cut by the first note-off.
    clip = clip_at(60, [(0, 60, 1, 100), (1, 60, 1, 100)])
    audio = render(clip, 16000, seconds=2.0)
    assert rms(audio[16000 + 800 : 16000 + 4000]) > 0.5 * rms(audio[800:4000])


def test_note_shorter_than_a_sample_still_ends():
    # 1000 bpm at PPQ 960 and 8 kHz: one tick is half a sample, so on and off round together.
    clip = Clip([Note(0, 60, 1, 100)], 960, [TempoChange(0, 1000.0)])
    audio = render(clip, 8000, seconds=3.0)
    assert np.abs(audio).max() > 0
    assert np.abs(audio[2 * 8000 :]).max() < 1e-4  # released, not held to the end


# ------------------------------------------------------------------------- reset between renders
def test_render_after_loud_render_equals_fresh_synth():
    quiet = clip_at(120, [(0, 64, 1, 70), (1, 67, 1, 70)])
    fresh = render(quiet, 16000, synth=load_synth(sample_rate=16000))
    used = load_synth(sample_rate=16000)
    render(loud_clip(), 16000, seconds=1.0, synth=used)  # cropped while the cluster sounds
    np.testing.assert_array_equal(render(quiet, 16000, synth=used), fresh)
    # The shared per-process synth behind render() resets the same way.
    render(loud_clip(), 16000, seconds=1.0)
    np.testing.assert_array_equal(render(quiet, 16000), fresh)


def test_render_on_a_playback_synth_leaves_it_clean_and_stereo():
    synth = load_synth(sample_rate=44100)
    synth.noteon(0, 60, 127)  # as if the studio were playing something
    synth.generate(1000)
    render(loud_clip(), 16000, seconds=0.5, synth=synth)
    reference = load_synth(sample_rate=44100)
    for s in (synth, reference):
        s.noteon(0, 72, 90)
    after = np.frombuffer(synth.generate(4410), dtype=np.float32)
    expected = np.frombuffer(reference.generate(4410), dtype=np.float32)
    assert len(after) == 2 * 4410  # still stereo at its own rate
    np.testing.assert_array_equal(after, expected)


def test_reset_synth_silences_immediately():
    synth = load_synth(sample_rate=16000)
    synth.noteon(0, 48, 127)
    synth.generate(800)
    reset_synth(synth)
    assert not np.frombuffer(synth.generate(1600), dtype=np.float32).any()


# ------------------------------------------------------------------------- pool
def test_render_many_matches_render_in_order():
    clips = [clip_at(100 + 10 * i, [(b, 48 + 3 * i + b, 1, 60 + 5 * i) for b in range(4)]) for i in range(5)]
    expected = [render(c, 16000, seconds=2.0) for c in clips]
    pooled = render_many(clips, 16000, seconds=2.0, processes=2)
    assert len(pooled) == len(clips)
    for got, want in zip(pooled, expected):
        np.testing.assert_array_equal(got, want)
    serial = render_many(clips[:2], 16000, processes=1)
    np.testing.assert_array_equal(serial[1], render(clips[1], 16000))
    assert render_many([], 16000) == []
    with pytest.raises(RenderError, match="processes"):
        render_many(clips, processes=0)


# ------------------------------------------------------------------------- bad input
def test_missing_and_corrupt_soundfonts(tmp_path):
    with pytest.raises(SoundFontError, match="not found"):
        load_synth(tmp_path / "nope.sf2")
    with pytest.raises(SoundFontError, match="not a file"):
        load_synth(tmp_path)
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"this is not a soundfont at all")
    with pytest.raises(SoundFontError, match="not a SoundFont"):
        load_synth(garbage)
    truncated = tmp_path / "truncated.sf2"
    truncated.write_bytes(DEFAULT_SOUNDFONT.read_bytes()[:200_000])
    with pytest.raises(SoundFontError, match="corrupt"):
        load_synth(truncated)
    clip = clip_at(120, [(0, 60, 1, 80)])
    with pytest.raises(SoundFontError):
        render(clip, soundfont=truncated)
    with pytest.raises(SoundFontError):
        render_many([clip, clip], soundfont=tmp_path / "nope.sf2", processes=2)


def test_user_soundfont_without_piano_preset_uses_first_preset(tmp_path):
    build = load_build_script()
    source = build.parse_soundfont(DEFAULT_SOUNDFONT.read_bytes())
    name, _, bank, *rest = source.presets[0]
    source.presets[0] = (name, 5, bank, *rest)  # renumber the piano to program 5
    other = tmp_path / "other.sf2"
    other.write_bytes(build.subset(source, 0, 5, name="test", comment="test"))
    synth = load_synth(other, sample_rate=16000)
    assert synth.program_info(0)[1:] == (0, 5)
    clip = clip_at(120, [(0, 60, 1, 80)])
    assert rms(render(clip, 16000, soundfont=other)) > 0.01
    np.testing.assert_allclose(render(clip, 16000, soundfont=other), render(clip, 16000), atol=1e-6)


def test_invalid_render_arguments():
    clip = clip_at(120, [(0, 60, 1, 80)])
    for bad_rate in (0, 100, 10**6, 16000.5):
        with pytest.raises(RenderError):
            render(clip, sample_rate=bad_rate)
    for bad_seconds in (-1, float("nan"), float("inf"), 10**7):
        with pytest.raises(RenderError):
            render(clip, seconds=bad_seconds)
    with pytest.raises(RenderError, match="expected a Clip"):
        render([Note(0, 60, 10)])


# ------------------------------------------------------------------------- WAV files
def test_wav_round_trip(tmp_path):
    audio = render(clip_at(120, [(0, 60, 1, 100)]), 16000, seconds=1.0)
    path = tmp_path / "sub" / "out.wav"
    save_wav(path, audio, 16000)
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
    loaded, rate = load_wav(path)
    assert rate == 16000 and loaded.dtype == np.float32
    assert np.max(np.abs(loaded - audio)) <= 1.0 / 32767 + 1e-6
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temp files left


def test_save_wav_clips_and_rejects_bad_audio(tmp_path):
    path = tmp_path / "x.wav"
    save_wav(path, np.array([2.0, -2.0, 0.5]), 8000)
    np.testing.assert_allclose(load_wav(path)[0], [1.0, -1.0, 0.5], atol=1e-4)
    with pytest.raises(AudioFileError, match="mono"):
        save_wav(path, np.zeros((10, 2)), 8000)
    with pytest.raises(AudioFileError, match="NaN"):
        save_wav(path, np.array([0.0, np.nan]), 8000)
    with pytest.raises(AudioFileError, match="float"):
        save_wav(path, np.zeros(4, dtype=np.int16), 8000)


def test_load_wav_mixes_down_and_resamples(tmp_path):
    t = np.arange(44100) / 44100
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = tmp_path / "stereo.wav"
    soundfile.write(str(path), stereo, 44100, subtype="PCM_16")
    mono, rate = load_wav(path)
    assert rate == 44100 and mono.shape == (44100,)
    assert abs(np.max(np.abs(mono)) - 0.25) < 1e-3  # mean of the two channels
    resampled, rate = load_wav(path, sample_rate=16000)
    assert rate == 16000 and resampled.dtype == np.float32
    assert abs(len(resampled) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(resampled))
    assert abs(np.argmax(spectrum) * 16000 / len(resampled) - 440) < 2


def test_load_wav_bad_files(tmp_path):
    with pytest.raises(AudioFileError, match="not found"):
        load_wav(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioFileError, match="cannot read"):
        load_wav(bad)
    text = tmp_path / "notes.wav"
    text.write_text("hello")
    with pytest.raises(AudioFileError):
        load_wav(text)


# ------------------------------------------------------------------------- the build script
@pytest.mark.skipif(not FLUID_SOURCE.is_file(), reason="Debian fluid-soundfont-gm not installed")
def test_build_script_reproduces_shipped_soundfont(tmp_path):
    build = load_build_script()
    out = tmp_path / "piano.sf2"
    assert build.main(["--source", str(FLUID_SOURCE), "--output", str(out)]) == 0
    assert out.read_bytes() == DEFAULT_SOUNDFONT.read_bytes()


@pytest.mark.skipif(not MUSESCORE_SOURCE.is_file(), reason="Debian musescore-general-soundfont not installed")
def test_build_script_subsets_sf3_and_renderer_plays_it(tmp_path):
    # SF3 samples are Ogg streams: the subset must keep them decodable and their loops intact.
    build = load_build_script()
    out = tmp_path / "grand.sf3"
    assert build.main(["--source", str(MUSESCORE_SOURCE), "--output", str(out)]) == 0
    synth = load_synth(out, sample_rate=16000)
    assert synth.program_info(0)[1:] == (0, 0)
    audio = render(clip_at(120, [(0, 60, 4, 110)]), 16000, soundfont=out)
    assert rms(audio[: 2 * 16000]) > 1e-3


def test_build_script_reads_riff_chunks_with_and_without_the_pad_byte():
    import struct

    build = load_build_script()

    def chunk(cid: bytes, body: bytes, pad: bool = True) -> bytes:
        return cid + struct.pack("<I", len(body)) + body + (b"\0" if pad and len(body) % 2 else b"")

    for pad in (True, False):  # Polyphone's SF3 export omits the pad byte after odd-sized bodies
        data = chunk(b"ICOP", b"abc", pad) + chunk(b"ISFT", b"xy") + chunk(b"ICMT", b"odd", pad)
        assert [(cid, body) for cid, body in build._chunks(data, 0, len(data))] == [
            (b"ICOP", b"abc"), (b"ISFT", b"xy"), (b"ICMT", b"odd")]
    broken = chunk(b"ICOP", b"abc") + b"LIST" + struct.pack("<I", 1000)
    with pytest.raises(build.SoundFontFormatError, match="runs past"):
        list(build._chunks(broken, 0, len(broken)))
