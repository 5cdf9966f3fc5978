"""Tests for engine.playback: the audio callback's logic offline (render_block) and real
playback through a JACK dummy server (audio device + MIDI out on real ports)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from jack_support import jack_server, jackd_missing_reason, portaudio_missing_reason
from engine.music import Clip, Note, TempoChange, TimeSignature
from engine.playback import (
    AudioUnavailable,
    PlaybackError,
    Player,
    list_output_devices,
)
from engine.render import DEFAULT_SOUNDFONT, SoundFontError, note_schedule
from engine.render import render as render_offline

SR = 48000
PPQ = 480
# TinySoundFont advances envelopes in 64-sample blocks: a new voice is silent for the rest of
# its first block, so an onset is audible within one synth block after its exact sample.
SYNTH_BLOCK = 64
SILENCE = 1e-4


def render(player: Player, frames: int, block: int = 256) -> np.ndarray:
    chunks, done = [], 0
    while done < frames:
        n = min(block, frames - done)
        chunks.append(player.render_block(n))
        done += n
    return np.concatenate(chunks)


def first_sound(audio: np.ndarray, threshold: float = 0.0) -> int:
    loud = np.nonzero(np.abs(audio).max(axis=1) > threshold)[0]
    assert len(loud), "no sound at all"
    return int(loud[0])


def expected_sample(clip: Clip, tick: int) -> int:
    return round(clip.seconds_at(tick) * SR)


@pytest.fixture
def player() -> Player:
    p = Player(sample_rate=SR)
    yield p
    p.close()


# ---------------------------------------------------------------------------- scheduling
@pytest.mark.parametrize("start_tick", [480, 481, 777, 1000])
@pytest.mark.parametrize("block", [256, 100, 1024])
def test_onset_lands_on_its_sample(player, start_tick, block):
    clip = Clip([Note(start_tick, 60, 480, 100)], PPQ)
    player.set_clip(clip)
    player.play(0)
    audio = render(player, SR * 2, block)
    expected = expected_sample(clip, start_tick)
    onset = first_sound(audio)
    assert expected <= onset <= expected + SYNTH_BLOCK


def test_onset_follows_tempo_map(player):
    clip = Clip([Note(0, 48, 100, 90), Note(3 * PPQ + 7, 72, 240, 100)], PPQ,
                tempos=[TempoChange(0, 120.0), TempoChange(PPQ, 60.0), TempoChange(2 * PPQ, 200.0)])
    player.set_clip(clip)
    player.play(0)
    audio = render(player, SR * 4)
    expected = expected_sample(clip, 3 * PPQ + 7)  # 0.5 + 1.0 + 0.3 s + 7 ticks
    assert expected == round((0.5 + 1.0 + 0.3 + 7 * 60 / (200 * PPQ)) * SR)
    # The first note has decayed to silence long before; the second one starts on time.
    segment = audio[expected - 2000:]
    onset = expected - 2000 + first_sound(segment, 0.01)
    assert expected <= onset <= expected + SYNTH_BLOCK + 64  # loud (> 0.01) a few samples in


def test_play_from_tick_starts_there(player):
    clip = Clip([Note(0, 60, 240, 100), Note(960, 64, 240, 100)], PPQ)
    player.set_clip(clip)
    player.play(from_tick=900)
    assert player.position_tick == pytest.approx(900)
    audio = render(player, SR)
    # The first note is skipped; the second comes 60 ticks (62.5 ms) after the start.
    expected = expected_sample(clip, 960) - expected_sample(clip, 900)
    assert expected <= first_sound(audio) <= expected + SYNTH_BLOCK


def test_nothing_sounds_before_play(player):
    player.set_clip(Clip([Note(0, 60, 480, 100)], PPQ))
    assert np.abs(render(player, SR // 2)).max() == 0.0
    assert not player.playing


def test_position_reporting_and_seek(player):
    player.set_clip(Clip([Note(0, 60, 4 * PPQ, 100)], PPQ))  # 120 bpm: 960 ticks per second
    player.play(0)
    render(player, SR)
    assert player.playing
    assert player.position_seconds == pytest.approx(1.0)
    assert player.position_tick == pytest.approx(960)
    player.seek(240)
    assert player.position_tick == pytest.approx(240)  # visible at once, before the next block
    render(player, SR // 2)
    assert player.position_tick == pytest.approx(240 + 480)
    player.stop()
    render(player, SR // 4)
    assert player.position_tick == pytest.approx(720)  # stopped: stays put
    assert not player.playing


def test_set_clip_while_playing_keeps_tick_position(player):
    player.set_clip(Clip([Note(0, 60, 8 * PPQ, 100)], PPQ))
    player.play(0)
    render(player, SR)  # 960 ticks at 120 bpm
    slower = Clip([Note(0, 60, 8 * PPQ, 100), Note(1440, 67, 240, 100)], PPQ,
                  tempos=[TempoChange(0, 60.0)])
    player.set_clip(slower)
    render(player, 256)
    # Same tick, now at 60 bpm (480 ticks per second): 256 frames advance 2.56 ticks.
    assert player.position_tick == pytest.approx(960 + 256 / SR * 480, abs=0.01)
    # The new clip's note at tick 1440 is 480 ticks = 1 s away at the new tempo.
    before = render(player, SR - 256 - 4000)
    assert np.abs(before).max() < 0.3  # only the held first note (releasing)
    audio = render(player, 8000)
    energy = np.abs(audio[:, 0])
    onset_window = energy[4000 - 256:4000 + SYNTH_BLOCK + 256]
    assert onset_window.max() > np.abs(before[-2000:, 0]).max()


def test_set_clip_while_stopped_keeps_tick_position(player):
    player.set_clip(Clip([Note(0, 60, PPQ, 100)], PPQ))
    player.seek(960)
    render(player, 256)
    player.set_clip(Clip([Note(0, 60, PPQ, 100)], PPQ, tempos=[TempoChange(0, 60.0)]))
    assert player.position_tick == pytest.approx(960)
    render(player, 256)
    assert player.position_tick == pytest.approx(960)
    assert player.position_seconds == pytest.approx(2.0)  # 960 ticks at 60 bpm


def test_repeated_pitch_restrikes(player):
    clip = Clip([Note(0, 60, 480, 100), Note(480, 60, 480, 100)], PPQ)
    player.set_clip(clip)
    player.play(0)
    audio = render(player, SR * 2)
    second = expected_sample(clip, 480)
    envelope = np.abs(audio[:, 0])
    # The second strike raises the level again right after its sample.
    assert envelope[second + SYNTH_BLOCK: second + 2000].max() > 2 * envelope[second - 2000: second].max()


def test_playback_plays_what_a_render_hears(player):
    """Live playback and offline rendering (what MAA scores) each turned a clip into timed notes their own
    way: a note before tick 0 was rendered but not played, and overlapping notes of one pitch were re-struck
    live but left to the synth's voice order in renders. Both play `engine.render.note_schedule` now: the
    same notes at the same samples, across a tempo change, with the edge cases below."""
    clip = Clip([Note(-240, 62, 480, 90),  # before the clip
                 Note(0, 60, 480, 100), Note(240, 64, 0, 90),  # a zero-length note
                 Note(480, 128, 480, 90), Note(480, -1, 480, 90),  # pitches MIDI cannot play
                 Note(960, 67, 960, 100), Note(1200, 67, 480, 80),  # a pitch struck again while it sounds
                 Note(1920, 72, 960, 70), Note(1920, 72, 240, 110),  # one pitch twice at one onset
                 Note(2400, 76, 1440, 90), Note(2880, 76, 240, 60)],  # a short strike inside a long note
                PPQ, [TempoChange(0, 125.0), TempoChange(1440, 75.0)])
    # The rule: what MIDI can play, from tick 0; a key sounds once (one note per onset, the longest; a new
    # onset ends the note still sounding).
    sounding = [(0, 480, 60, 100), (960, 1200, 67, 100), (1200, 1680, 67, 80), (1920, 2880, 72, 70),
                (2400, 2880, 76, 90), (2880, 3120, 76, 60)]
    notes = note_schedule(clip)
    tempo = clip.tempo_map()
    assert list(zip(notes.pitches.tolist(), notes.velocities.tolist())) == [(p, v) for _s, _e, p, v in sounding]
    np.testing.assert_allclose(notes.on_seconds, [tempo.seconds_at(s) for s, _e, _p, _v in sounding])
    np.testing.assert_allclose(notes.off_seconds, [tempo.seconds_at(e) for _s, e, _p, _v in sounding])

    # TinySoundFont steps envelopes in 64-sample blocks counted from each of its render calls, which both
    # paths split at every event (playback also at its blocks): with every event on the 64-sample grid
    # (a tick is 48 samples at 125 bpm, 80 at 75 bpm) the two are comparable sample for sample.
    seconds = 5.0
    player.set_clip(clip)
    player.play(0)
    live = render(player, int(seconds * SR)).mean(axis=1)  # a mono render is the mean of the stereo synth
    offline = render_offline(clip, SR, seconds=seconds)
    assert np.abs(offline).max() > 0.05
    np.testing.assert_allclose(live, offline, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- loop
def test_loop_wraps_inside_a_block_and_repeats(player):
    clip = Clip([Note(0, 60, 240, 100), Note(300, 64, 600, 90), Note(480, 67, 480, 100)], PPQ)
    player.set_clip(clip)
    player.set_loop(0, 480)  # 0.5 s = 24000 samples: not a multiple of 256, wraps mid-block
    assert player.loop_enabled and player.loop_region == (0, 480)
    player.play(0)
    loop = expected_sample(clip, 480)
    positions = []
    chunks = []
    for _ in range(loop * 4 // 256):
        chunks.append(player.render_block(256))
        positions.append(player.position_tick)
    audio = np.concatenate(chunks)
    assert all(0 <= p < 480 for p in positions)
    assert min(np.diff(positions)) < 0  # it went back
    # Every pass after the first sounds like the second (same onsets and tails; TinySoundFont's
    # 64-sample envelope steps differ with the block phase, hence the tolerance).
    reference = audio[loop:2 * loop]
    peak = np.abs(reference).max()
    for k in (2, 3):
        np.testing.assert_allclose(audio[k * loop:(k + 1) * loop], reference, atol=0.06 * peak)
    # Pitch 67 (tick 480, the loop end) never plays: compare with the loop disabled.
    player.loop_enabled = False
    player.play(0)
    unlooped = render(player, 2 * loop)
    assert np.abs(unlooped[loop + 2000:2 * loop] - audio[loop + 2000:2 * loop]).max() > 0.05 * peak


def test_loop_note_across_the_end_is_cut_at_the_wrap(player):
    clip = Clip([Note(240, 60, 960, 100)], PPQ)  # ends at 1200, long after the loop end
    player.set_clip(clip)
    player.set_loop(0, 480)
    player.play(0)
    loop = expected_sample(clip, 480)
    audio = render(player, 3 * loop)
    start = expected_sample(clip, 240)
    # Each pass: silence from the wrap until the note starts again (its previous voice got a
    # note-off at the wrap and has released), then sound.
    for k in (1, 2):
        wrap = k * loop
        assert np.abs(audio[wrap + start - 3000: wrap + start]).max() < 0.3 * np.abs(audio).max()
        onset = wrap + start
        assert np.abs(audio[onset: onset + 2000]).max() > 0.3 * np.abs(audio).max()


def test_set_loop_validates(player):
    with pytest.raises(PlaybackError):
        player.set_loop(480, 480)
    with pytest.raises(PlaybackError):
        player.set_loop(0, None)
    with pytest.raises(PlaybackError):
        player.set_loop(-5, 10)
    with pytest.raises(PlaybackError):
        player.loop_enabled = True  # no region yet
    player.set_loop(0, 480)
    player.set_loop(None, None)
    assert not player.loop_enabled


# ---------------------------------------------------------------------------- metronome
def click_onsets(audio: np.ndarray) -> list[int]:
    level = np.abs(audio[:, 0])
    onsets = []
    for i in np.nonzero(level > SILENCE)[0]:
        if not onsets or i - onsets[-1] > 2000:
            onsets.append(int(i))
    return onsets


def test_metronome_clicks_on_beats_with_bar_accent(player):
    clip = Clip([], PPQ, tempos=[TempoChange(0, 100.0)], time_signatures=[TimeSignature(0, 3, 4)])
    player.set_clip(clip)
    player.set_metronome(True)
    player.play(0)
    audio = render(player, SR * 4)
    beats = [expected_sample(clip, b * PPQ) for b in range(7)]  # 0.6 s apart
    onsets = click_onsets(audio)
    assert len(onsets) == len(beats)
    for onset, beat in zip(onsets, beats):
        assert beat <= onset <= beat + 2  # a generated click: starts on its sample (sin(0) = 0)
    peaks = [np.abs(audio[b:b + 1000]).max() for b in beats]
    accents = [peaks[i] for i in (0, 3, 6)]
    others = [peaks[i] for i in (1, 2, 4, 5)]
    assert min(accents) > 1.3 * max(others)


def test_metronome_follows_time_signature_change_and_eighth_beats(player):
    clip = Clip([], PPQ, time_signatures=[TimeSignature(0, 2, 4), TimeSignature(2 * PPQ, 6, 8)])
    player.set_clip(clip)
    player.set_metronome(True)
    player.play(0)
    audio = render(player, int(SR * 2.1))
    # 2/4 at 120 bpm: beats at 0, 0.5 s; then 6/8 from tick 960: an eighth (240 ticks) apart.
    expected = [0, PPQ, 2 * PPQ] + [2 * PPQ + k * 240 for k in range(1, 5)]
    onsets = click_onsets(audio)
    assert onsets[:len(expected)] == pytest.approx([expected_sample(clip, t) for t in expected], abs=2)


def test_metronome_off_is_silent(player):
    player.set_metronome(False)
    player.play(0)
    assert np.abs(render(player, SR)).max() == 0.0


# ---------------------------------------------------------------------------- stop, audition
def test_stop_silences(player):
    player.set_clip(Clip([Note(0, 60, 20 * PPQ, 110), Note(0, 64, 20 * PPQ, 110)], PPQ))
    player.play(0)
    playing = render(player, SR // 2)
    assert np.abs(playing).max() > 0.05
    player.stop()
    after = render(player, int(SR * 1.5))
    assert np.abs(after[-SR // 4:]).max() < SILENCE  # release tail over
    assert np.abs(after[:256]).max() > 0  # released, not cut dead


def test_panic_cuts_at_once(player):
    player.set_clip(Clip([Note(0, 60, 20 * PPQ, 110)], PPQ))
    player.play(0)
    render(player, SR // 2)
    player.panic()
    after = render(player, SR // 10)
    assert np.abs(after[SR // 20:]).max() < SILENCE  # TinySoundFont's 10 ms fast release


def test_audition_notes(player):
    player.note_on(60, 100)
    held = render(player, SR // 2)
    assert first_sound(held) <= SYNTH_BLOCK
    player.note_off(60)
    released = render(player, int(SR * 1.5))
    assert np.abs(released[-SR // 4:]).max() < SILENCE
    with pytest.raises(PlaybackError):
        player.note_on(128)
    with pytest.raises(PlaybackError):
        player.note_on(60, 0)


def test_audition_does_not_cut_playing_note_of_same_pitch(player):
    player.set_clip(Clip([Note(0, 60, 10 * PPQ, 100)], PPQ))
    player.play(0)
    render(player, SR // 4)
    player.note_on(60, 80)
    render(player, SR // 4)
    player.note_off(60)
    rest = render(player, int(SR * 1.5))
    assert np.abs(rest[-SR // 4:]).max() > 0.01  # the clip's note still sounds


def test_stop_at_end(player):
    player.set_clip(Clip([Note(0, 60, PPQ, 100)], PPQ))
    player.stop_at_end = True
    player.play(0)
    render(player, SR)
    assert not player.playing
    assert player.position_tick == pytest.approx(PPQ, abs=256 / SR * 960 + 1)


def test_callback_wrapper_survives_errors(player):
    """The real callback entry point: errors become silence plus a reported message."""

    class Flags:
        output_underflow = True

    class Times:
        outputBufferDacTime = 1.01
        currentTime = 1.0

    out = np.ones((256, 2), np.float32)
    player._callback(out, 256, Times(), Flags())
    assert player.xrun_count == 1 and player.callback_error is None
    player._cb_fonts = None  # break the synth on purpose
    out[:] = 1
    player._callback(out, 256, Times(), Flags())
    assert np.all(out == 0)
    assert player.callback_error and "TypeError" in player.callback_error


def test_capture_records_rendered_frames(player):
    player.start_capture(0.1)
    player.note_on(60)
    first = render(player, 2000)
    captured = player.stop_capture()
    np.testing.assert_array_equal(captured[:2000], first)
    assert len(captured) == 2000
    with pytest.raises(PlaybackError):
        player.stop_capture()


# ---------------------------------------------------------------------------- errors
def test_invalid_arguments():
    with pytest.raises(PlaybackError):
        Player(sample_rate=100)
    with pytest.raises(PlaybackError):
        Player(latency="fast")
    with pytest.raises(PlaybackError):
        Player(blocksize=-1)
    p = Player()
    with pytest.raises(PlaybackError):
        p.set_clip([Note(0, 60, 10)])
    with pytest.raises(PlaybackError):
        p.play(-1)
    with pytest.raises(PlaybackError):
        p.seek(float("nan"))
    with pytest.raises(PlaybackError):
        p.render_block(0)


def test_bad_soundfont_raises_and_keeps_old(player, tmp_path):
    bogus = tmp_path / "bogus.sf2"
    bogus.write_bytes(b"not a soundfont at all")
    with pytest.raises(SoundFontError):
        player.set_soundfont(bogus)
    with pytest.raises(SoundFontError):
        Player(soundfont=tmp_path / "missing.sf2")
    player.note_on(60)
    assert np.abs(render(player, 4000)).max() > 0.01


def test_set_soundfont_swaps_synth(player):
    player.note_on(60)
    assert np.abs(render(player, 8000)).max() > 0.01
    player.set_soundfont(DEFAULT_SOUNDFONT)  # a fresh synth: the held voice went with the old one
    assert np.abs(render(player, 2000)).max() == 0.0
    player.note_on(62)
    assert np.abs(render(player, 8000)).max() > 0.01


# Real devices need the PortAudio library (libportaudio2); a machine without it skips these.
PORTAUDIO_MISSING = portaudio_missing_reason()
needs_portaudio = pytest.mark.skipif(PORTAUDIO_MISSING is not None, reason=PORTAUDIO_MISSING or "")


@needs_portaudio
def test_missing_device_raises_audio_unavailable_and_offline_still_works():
    p = Player(device="no such output device 0xdeadbeef")
    with pytest.raises(AudioUnavailable) as info:
        p.open()
    assert "no such output device" in str(info.value) or "no audio output device" in str(info.value)
    assert p.unavailable_reason == str(info.value)
    assert not p.is_open
    p.note_on(60)
    assert np.abs(p.render_block(4000)).max() > 0.01


def test_without_sounddevice_audio_is_unavailable_but_offline_works(monkeypatch):
    import sys

    from engine import playback

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import now fails, as if not installed
    monkeypatch.setattr(playback, "_sd_module", None)
    p = Player()
    with pytest.raises(AudioUnavailable, match="sounddevice"):
        p.open()
    with pytest.raises(AudioUnavailable):
        list_output_devices()
    assert p.unavailable_reason and not p.is_open
    p.note_on(60)
    assert np.abs(p.render_block(4000)).max() > 0.01


# ---------------------------------------------------------------------------- real ports (JACK)
JACKD_MISSING = jackd_missing_reason()
needs_jack = pytest.mark.skipif(JACKD_MISSING is not None, reason=JACKD_MISSING or "")


@pytest.fixture(scope="module")
def jack():
    with jack_server(sample_rate=SR, period=256) as server:
        yield server


def jack_device() -> str:
    devices = [d for d in list_output_devices() if "JACK" in d]
    assert devices, f"PortAudio lists no JACK output: {list_output_devices()}"
    return devices[0]


@pytest.mark.jack
@pytest.mark.timeout(60)  # a wedged JACK client must fail the test, not hang CI
@needs_jack
@needs_portaudio
def test_audio_flows_through_the_jack_device(jack):
    clip = Clip([Note(i * 240, 60 + 2 * i, 200, 100) for i in range(4)], PPQ)
    player = Player(sample_rate=SR, device=jack_device(), blocksize=256)
    try:
        player.open()
        assert player.is_open and player.unavailable_reason is None
        assert player.output_latency is not None and player.output_latency > 0
        player.set_clip(clip)
        player.start_capture(3.0)
        player.play(0)
        deadline = time.monotonic() + 5
        while player.position_seconds < 1.2 and time.monotonic() < deadline:
            time.sleep(0.02)
        player.stop()
        time.sleep(0.1)
        audio = player.stop_capture()
    finally:
        player.close()
    assert not player.is_open
    assert player.callback_error is None
    assert len(audio) >= SR  # the callback really ran for > 1 s of audio
    # The capture starts at play(); every note start is followed by sound.
    for i in range(4):
        onset = expected_sample(clip, i * 240)
        window = audio[onset: onset + 4000]
        assert np.abs(window).max() > 0.02, f"note {i} silent"


@pytest.mark.jack
@pytest.mark.timeout(60)  # a wedged JACK client must fail the test, not hang CI
@needs_jack
@needs_portaudio
def test_midi_out_follows_the_audio_schedule(jack):
    import rtmidi

    from engine.midi_io import MidiOut

    received: list[tuple[float, list[int]]] = []
    clip = Clip([Note(i * 240, 60 + i, 120, 40 + 10 * i) for i in range(6)], PPQ)  # 0.25 s apart
    midi_out = MidiOut(api="JACK", virtual_name="SMART Studio", channel=3)
    # The "other program" polls rtmidi's queue (no Python callback in JACK's process thread).
    probe = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="probe")

    def poll_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            while (item := probe.get_message()) is not None:
                received.append((time.monotonic(), item[0]))
            time.sleep(0.002)

    player = Player(sample_rate=SR, device=jack_device(), blocksize=256)
    try:
        ports = probe.get_ports()
        probe.open_port([i for i, p in enumerate(ports) if p.endswith(":SMART Studio")][0])
        # JACK connects asynchronously: ping (CC 119) until the probe hears it, then start.
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            midi_out._enqueue(time.monotonic(), [0xB3, 119, 0])
            poll_for(0.05)
        assert received, "JACK never connected the probe"
        poll_for(0.05)
        received.clear()
        player.open()
        player.set_midi_out(midi_out)
        player.set_clip(clip)
        player.play(0)
        deadline = time.monotonic() + 5
        while player.position_seconds < 1.6 and time.monotonic() < deadline:
            poll_for(0.02)
        player.stop()
        poll_for(0.3)
    finally:
        player.close()
        midi_out.close()
        probe.close_port()
        probe.delete()
    messages = [m for _, m in received]
    times = [t for t, m in received if m[0] == 0x93 and m[2] > 0]
    expected = []
    for note in clip.notes:
        expected += [[0x93, note.pitch, note.velocity], [0x83, note.pitch, 0]]
    assert messages[:len(expected)] == expected
    assert [0xB3, 123, 0] in messages[len(expected):]  # all notes off on stop
    # Note-ons keep the clip's rhythm (0.25 s apart). A non-realtime dummy server on a busy
    # machine can stall a callback (the audio is late then too), so single gaps may stretch;
    # but no message may come early, and the typical gap is the clip's.
    gaps = np.diff(times)
    assert np.all(gaps > 0.25 - 0.04), gaps
    assert abs(np.median(gaps) - 0.25) < 0.05, gaps


@pytest.mark.jack
@pytest.mark.timeout(60)  # a wedged JACK client must fail the test, not hang CI
@needs_jack
@needs_portaudio
def test_closed_midi_out_and_stale_auditions_do_not_disturb_playback(jack):
    from engine.midi_io import MidiOut

    midi_out = MidiOut(api="JACK", virtual_name="SMART Studio")
    midi_out.close()
    player = Player(sample_rate=SR, device=jack_device())
    try:
        player.set_midi_out(midi_out)  # closed: messages are dropped, never an error
        player.note_on(60)  # auditioned while closed: must not sound later, when opened
        player.note_off(60)
        player.open()
        player.start_capture(0.5)
        time.sleep(0.3)
        audio = player.stop_capture()
        player.note_on(64)
        deadline = time.monotonic() + 3
        while player.peak_level < 0.01 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        player.close()
    assert len(audio) > 0 and np.abs(audio).max() == 0.0
    assert player.peak_level > 0.01  # the live audition after open() did sound
    assert player.callback_error is None
