"""Render clips to audio with TinySoundFont; read and write WAV files.

`render()` turns a `Clip` into float32 mono samples at any rate (16 kHz for Audiobox
Aesthetics scoring, 44.1/48 kHz for listening). Note-ons and note-offs land on the exact
sample given by the clip's tempo map: audio is generated in chunks between events. The
synth is put back into a fresh state before every render, so a render never carries the
tail of the previous one (no "render seconds of silence to flush" trick).

`render_many()` renders a batch in worker processes that each load the SoundFont once.
`load_synth()` is also what the studio's real-time playback uses to get a ready piano, and
`note_schedule()` what it plays: which notes sound, when, is decided once for both.
"""

from __future__ import annotations

import io
import math
import os
import threading
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile
import soxr
import tinysoundfont
from tinysoundfont import _tinysoundfont as _tsf

from engine.music import Clip, Note, atomic_write_bytes, dedupe_notes

DEFAULT_SOUNDFONT: Path = Path(__file__).resolve().parents[1] / "resources" / "soundfonts" / "piano.sf2"

# The shipped piano decays to -60 dB within ~0.9 s of a note-off (measured at keys 21-100).
RELEASE_TAIL_SECONDS = 1.0
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
# A guard against absurd requests: one hour is ~700 MB of float32 at 48 kHz.
MAX_RENDER_SECONDS = 3600.0
MAX_SOUNDFONT_BYTES = 512 * 1024 * 1024
# TinySoundFont ends voices that are cut off (reset, sounds-off) with a 10 ms fade
# (TSF_FASTRELEASETIME); rendering a little more than that lets them finish.
_FLUSH_SECONDS = 0.025
# TinySoundFont's mono mode sums the left and right pans; -6.02 dB makes it their mean, so
# a mono render has the same level as the stereo playback.
_MONO_GAIN_DB = -20.0 * math.log10(2.0)
_CHANNEL = 0
# TinySoundFont advances envelopes once per 64-sample block, starting at each note-on; a note
# with a non-zero attack (all of the shipped piano's) is therefore silent for its first block
# (4 ms at 16 kHz, 1.5 ms at 44.1 kHz) although its note-on lands on the exact sample.
TSF_ENVELOPE_BLOCK = 64


class SoundFontError(Exception):
    """A SoundFont could not be used (missing, unreadable, corrupt, no usable preset)."""


class RenderError(ValueError):
    """A render was asked for with invalid arguments (sample rate, length)."""


class AudioFileError(ValueError):
    """An audio file could not be read or written."""


# ---------------------------------------------------------------------------- synth setup
def _soundfont_path(soundfont: str | os.PathLike | None) -> Path:
    path = Path(soundfont) if soundfont is not None else DEFAULT_SOUNDFONT
    if not path.exists():
        raise SoundFontError(f"SoundFont not found: {path}")
    if not path.is_file():
        raise SoundFontError(f"SoundFont path is not a file: {path}")
    return path


def _check_header(path: Path) -> None:
    """Catch non-SoundFont files with a clear message (TinySoundFont only says 'could not load')."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(12)
    except OSError as exc:
        raise SoundFontError(f"cannot read SoundFont {path}: {exc.strerror or exc}") from None
    if size > MAX_SOUNDFONT_BYTES:
        raise SoundFontError(f"SoundFont {path} is too large ({size / 1e6:.0f} MB)")
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"sfbk":
        raise SoundFontError(f"not a SoundFont (.sf2/.sf3) file: {path}")


def _check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise RenderError(f"sample rate must be an integer, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise RenderError(f"sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    return int(sample_rate)


def _select_piano(synth: tinysoundfont.Synth) -> None:
    """Bank 0 / program 0 on channel 0, or the SoundFont's first preset if it has none."""
    sfid = synth.channel.get(_CHANNEL, 0)
    if synth.sfpreset_name(sfid, 0, 0) is not None:
        synth.program_select(_CHANNEL, sfid, 0, 0)
    else:
        synth.soundfonts[sfid].channel_set_preset_index(_CHANNEL, 0)


def load_synth(
    soundfont: str | os.PathLike | None = None, sample_rate: int = 44100, gain_db: float = 0.0
) -> tinysoundfont.Synth:
    """A new `tinysoundfont.Synth` with `soundfont` (default: the shipped piano) loaded.

    Bank 0 / program 0 (acoustic grand piano in General MIDI) is selected on channel 0, or the
    first preset when the file has no such preset. Output is TinySoundFont's default stereo
    float32 at `sample_rate`, scaled by `gain_db`. Loading the shipped 8 MB piano takes
    ~15 ms, so call this freely (e.g. when the user picks another SoundFont). Each call
    returns an independent synth; TinySoundFont synths are not thread-safe, so use one from
    one thread at a time. Raises `SoundFontError` with a one-line reason on failure.
    """
    path = _soundfont_path(soundfont)
    _check_header(path)
    sample_rate = _check_sample_rate(sample_rate)
    if not math.isfinite(gain_db):
        raise RenderError(f"gain must be a finite number of dB, got {gain_db!r}")
    synth = tinysoundfont.Synth(gain=float(gain_db), samplerate=sample_rate)
    try:
        sfid = synth.sfload(str(path))
    except (RuntimeError, tinysoundfont.SoundFontException):
        raise SoundFontError(f"corrupt or unsupported SoundFont: {path}") from None
    if synth.soundfonts[sfid].get_preset_count() == 0:
        raise SoundFontError(f"SoundFont has no presets: {path}")
    _select_piano(synth)
    return synth


def reset_synth(synth: tinysoundfont.Synth) -> None:
    """Put `synth` back into the state of a freshly loaded one (silent, piano on channel 0)."""
    _reset(synth, synth.samplerate)


def _reset(synth: tinysoundfont.Synth, sample_rate: int) -> None:
    # TinySoundFont's reset restores channel defaults but fades sounding voices out over
    # 10 ms instead of cutting them; that fade is rendered into a scratch buffer and dropped.
    for font in synth.soundfonts.values():
        font.reset()
    synth.generate_simple(int(_FLUSH_SECONDS * sample_rate) + 1)
    _select_piano(synth)


# ---------------------------------------------------------------------------- scheduling
@dataclass(frozen=True)
class NoteSchedule:
    """A clip's notes as a synth plays them, sorted by onset: note-on and note-off in seconds on the clip's
    tempo map, MIDI pitch and velocity (1–127). Live playback (`engine.playback`) and rendering both play
    this, so what the studio plays is what a render (and MAA's score of it) hears."""

    on_seconds: np.ndarray  # float64
    off_seconds: np.ndarray  # float64, after on_seconds
    pitches: np.ndarray  # int64, 0–127
    velocities: np.ndarray  # int64, 1–127

    def __len__(self) -> int:
        return len(self.pitches)

    def samples(self, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """(note-on, note-off) sample of each note at `sample_rate` (int64)."""
        on = np.round(self.on_seconds * sample_rate).astype(np.int64)
        # A note shorter than half a sample still needs its note-off after its note-on.
        return on, np.maximum(np.round(self.off_seconds * sample_rate).astype(np.int64), on + 1)


def sounding_notes(notes: Iterable[Note]) -> list[Note]:
    """The notes a synth plays, sorted, each with the length it sounds:

    - a pitch outside MIDI's 0–127 or a length under one tick cannot be played: dropped;
    - a note before tick 0 lies outside the clip (`check_notes` refuses it wherever clips enter; a clip built
      in code may still hold one): dropped, as a playhead cannot start before the clip does;
    - a key sounds once at a time: notes of one pitch and onset sound as one, the longest/loudest
      (`dedupe_notes`), and a later onset of a pitch ends the note still sounding there (a re-struck string,
      as a sustained note is cut on import and MIDI out sends it). Left to the synth, overlapping notes of a
      pitch sounded differently in playback (re-struck) and in renders (TinySoundFont releases the oldest
      voice of a key, so the first note-off ended the later note and the earlier one rang on).
    """
    kept = dedupe_notes(n for n in notes if 0 <= n.pitch <= 127 and n.duration > 0 and n.start >= 0)
    next_onset: dict[int, int] = {}  # pitch -> the onset after the note looked at (walking back in time)
    out = []
    for n in reversed(kept):
        end = min(n.end, next_onset.get(n.pitch, n.end))
        next_onset[n.pitch] = n.start
        out.append(n if end == n.end else Note(n.start, n.pitch, end - n.start, n.velocity))
    out.reverse()
    return out


def note_schedule(clip: Clip) -> NoteSchedule:
    """`clip`'s `sounding_notes` in seconds on its tempo map."""
    notes = np.array([(n.start, n.end, n.pitch, n.velocity) for n in sounding_notes(clip.notes)],
                     dtype=np.int64).reshape(-1, 4)
    tempo = clip.tempo_map()
    # MIDI velocities are 1–127 (0 would be a note-off): a note is never silenced by its velocity.
    return NoteSchedule(tempo.seconds_of(notes[:, 0]), tempo.seconds_of(notes[:, 1]), notes[:, 2],
                        np.clip(notes[:, 3], 1, 127))


@dataclass(frozen=True)
class _Render:
    """One render's work: the notes and the length (cheap to pickle to a worker)."""

    notes: NoteSchedule
    total_seconds: float


def _check_seconds(seconds: float, name: str) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.number)) \
            or not math.isfinite(seconds) or seconds < 0:
        raise RenderError(f"{name} must be a finite number >= 0, got {seconds!r}")
    return float(seconds)


def _render_job(clip: Clip, seconds: float | None, max_seconds: float | None = None) -> _Render:
    if not isinstance(clip, Clip):
        raise RenderError(f"expected a Clip, got {type(clip).__name__}")
    notes = note_schedule(clip)
    if seconds is not None and max_seconds is not None:
        raise RenderError("give seconds (exact length) or max_seconds (crop, never pad), not both")
    if seconds is None:
        total = (float(notes.off_seconds.max()) if len(notes) else 0.0) + RELEASE_TAIL_SECONDS
        if max_seconds is not None:
            total = min(total, _check_seconds(max_seconds, "max_seconds"))
    else:
        total = _check_seconds(seconds, "seconds")
    if total > MAX_RENDER_SECONDS:
        raise RenderError(f"render of {total:.0f} s is longer than the {MAX_RENDER_SECONDS:.0f} s limit")
    return _Render(notes, total)


def _render_schedule(synth: tinysoundfont.Synth, job: _Render, sample_rate: int) -> np.ndarray:
    """Render on `synth` switched to mono at `sample_rate`; the caller restores its output mode."""
    schedule = job.notes
    total = int(round(job.total_seconds * sample_rate))
    fonts = list(synth.soundfonts.values())
    for font in fonts:
        font.set_output(_tsf.OutputMode.Mono, sample_rate, synth.gain + _MONO_GAIN_DB)
    _reset(synth, sample_rate)
    audio = np.zeros(total, dtype=np.float32)
    if total == 0:
        return audio
    buffer = memoryview(audio.view(np.uint8))
    # Events sorted by sample; at equal samples note-offs (kind 0) go before note-ons so a
    # repeated pitch re-strikes instead of being cut by its predecessor's note-off.
    n = len(schedule)
    on_samples, off_samples = schedule.samples(sample_rate)
    samples = np.concatenate([off_samples, on_samples])
    kinds = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    keys = np.concatenate([schedule.pitches, schedule.pitches])
    velocities = np.concatenate([np.zeros(n), schedule.velocities / 127.0])
    order = np.lexsort((keys, kinds, samples))
    font = synth.soundfonts[synth.channel.get(_CHANNEL, 0)]
    position = 0
    for sample, kind, key, velocity in zip(samples[order].tolist(), kinds[order].tolist(),
                                           keys[order].tolist(), velocities[order].tolist()):
        if sample >= total:
            break
        if sample > position:
            _render_into(fonts, buffer[position * 4 : sample * 4])
            position = sample
        if kind:
            font.channel_note_on(_CHANNEL, key, velocity)
        else:
            font.channel_note_off(_CHANNEL, key)
    if position < total:
        _render_into(fonts, buffer[position * 4 :])
    return audio


def _render_into(fonts: list, buffer: memoryview) -> None:
    for index, font in enumerate(fonts):
        font.render(buffer, index > 0)  # later fonts mix into the first one's output


# ---------------------------------------------------------------------------- render API
class _CachedSynth:
    """One synth per SoundFont file per process, reused across renders (guarded by a lock)."""

    _lock = threading.Lock()
    _cache: dict[tuple, tuple[tinysoundfont.Synth, threading.Lock]] = {}
    _MAX_ENTRIES = 2  # each holds its sample data as float32 (~16 MB for the shipped piano)

    @classmethod
    def get(cls, soundfont: str | os.PathLike | None) -> tuple[tinysoundfont.Synth, threading.Lock]:
        path = _soundfont_path(soundfont).resolve()
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)  # a rebuilt file is reloaded
        with cls._lock:
            entry = cls._cache.get(key)
            if entry is None:
                entry = (load_synth(path, sample_rate=44100), threading.Lock())
                while len(cls._cache) >= cls._MAX_ENTRIES:
                    cls._cache.pop(next(iter(cls._cache)))
                cls._cache[key] = entry
            return entry


def render(
    clip: Clip,
    sample_rate: int = 16000,
    seconds: float | None = None,
    soundfont: str | os.PathLike | None = None,
    synth: tinysoundfont.Synth | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Render `clip` to float32 mono samples in [-1, 1] (not normalised).

    The result is exactly `round(seconds * sample_rate)` samples long: notes past the end are
    cut off, or silence is padded. With `seconds=None` it runs to the last note-off plus
    `RELEASE_TAIL_SECONDS`, cut at `max_seconds` when given (never padded: what MAA scoring
    needs, since it would hear padding as content). Uses `synth` when given (one from `load_synth`; it is reset before
    and after and keeps its own stereo output settings), else a per-process cached synth for
    `soundfont` (default: the shipped piano).
    """
    sample_rate = _check_sample_rate(sample_rate)
    job = _render_job(clip, seconds, max_seconds)
    if synth is not None:
        try:
            return _render_schedule(synth, job, sample_rate)
        finally:
            for font in synth.soundfonts.values():
                font.set_output(_tsf.OutputMode.StereoInterleaved, synth.samplerate, synth.gain)
            reset_synth(synth)
    cached, lock = _CachedSynth.get(soundfont)
    with lock:
        return _render_schedule(cached, job, sample_rate)


# Per worker process: the SoundFont path the pool was started with (loaded in the initializer).
_worker_soundfont: str | None = None


def _worker_init(soundfont: str) -> None:
    global _worker_soundfont
    _worker_soundfont = soundfont
    _CachedSynth.get(soundfont)


def _worker_render(work: tuple[_Render, int]) -> np.ndarray:
    job, sample_rate = work
    synth, lock = _CachedSynth.get(_worker_soundfont)
    with lock:
        return _render_schedule(synth, job, sample_rate)


def _check_processes(processes: int | None) -> None:
    if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int) or processes < 1):
        raise RenderError(f"processes must be a positive integer or None, got {processes!r}")


def _default_processes() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class RenderPool:
    """Worker processes that each load the SoundFont once; reuse it across many batches.

        with RenderPool(processes=2) as pool:
            audio = pool.render(clips, sample_rate=16000, seconds=30)

    Workers are started with 'spawn' (safe next to Qt and torch threads); starting costs
    about a second, so keep a pool around when rendering repeatedly (e.g. in training).
    """

    def __init__(self, soundfont: str | os.PathLike | None = None, processes: int | None = None):
        _check_processes(processes)
        path = _soundfont_path(soundfont)
        load_synth(path)  # fail here with a clear message instead of inside every worker
        self.processes = max(1, processes if processes is not None else _default_processes())
        self._executor = ProcessPoolExecutor(
            max_workers=self.processes, mp_context=get_context("spawn"),
            initializer=_worker_init, initargs=(str(path),))

    def render(self, clips: Iterable[Clip], sample_rate: int = 16000,
               seconds: float | None = None, max_seconds: float | None = None) -> list[np.ndarray]:
        """`render()` of every clip, in the order given."""
        sample_rate = _check_sample_rate(sample_rate)
        jobs = [(_render_job(clip, seconds, max_seconds), sample_rate) for clip in clips]
        chunksize = max(1, len(jobs) // (4 * self.processes))
        return list(self._executor.map(_worker_render, jobs, chunksize=chunksize))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "RenderPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def render_many(
    clips: Sequence[Clip],
    sample_rate: int = 16000,
    seconds: float | None = None,
    soundfont: str | os.PathLike | None = None,
    processes: int | None = None,
    max_seconds: float | None = None,
) -> list[np.ndarray]:
    """`render()` of every clip, in order, spread over `processes` worker processes.

    `processes=None` uses every available core; 1 (or a single clip) renders in this process.
    For repeated batches use a `RenderPool` to keep the workers alive.
    """
    clips = list(clips)
    sample_rate = _check_sample_rate(sample_rate)
    _check_processes(processes)
    processes = min(len(clips), processes if processes is not None else _default_processes())
    if processes <= 1:
        return [render(clip, sample_rate, seconds, soundfont, max_seconds=max_seconds) for clip in clips]
    with RenderPool(soundfont, processes) as pool:
        return pool.render(clips, sample_rate, seconds, max_seconds)


# ---------------------------------------------------------------------------- WAV files
def save_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono `audio` (float, nominally in [-1, 1]; clipped) as 16-bit PCM WAV, atomically."""
    samples = np.asarray(audio)
    if samples.ndim == 2 and 1 in samples.shape:
        samples = samples.reshape(-1)
    if samples.ndim != 1:
        raise AudioFileError(f"save_wav expects mono audio (1-D), got shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioFileError(f"save_wav expects float samples, got {samples.dtype}")
    if not np.all(np.isfinite(samples)):
        raise AudioFileError("audio contains NaN or infinite samples")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioFileError(f"invalid sample rate {sample_rate!r}")
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    data = io.BytesIO()
    with wave.open(data, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(int(sample_rate))
        wav.writeframes(pcm.tobytes())
    try:
        atomic_write_bytes(path, data.getvalue())
    except OSError as exc:
        raise AudioFileError(f"cannot write {path}: {exc.strerror or exc}") from None


# What `save_audio` writes, by file suffix: (libsndfile format, subtype).
AUDIO_FILE_FORMATS = {".wav": ("WAV", "PCM_16"), ".wave": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"),
                      ".ogg": ("OGG", "VORBIS"), ".mp3": ("MP3", "MPEG_LAYER_III")}


def check_audio_suffix(path: str | os.PathLike) -> None:
    """Refuse a file name whose suffix names a format `save_audio` does not write (checked before a render,
    so that `out.m4a` is not left holding WAV bytes under a misleading name)."""
    suffix = Path(path).suffix.lower()
    if suffix not in AUDIO_FILE_FORMATS:
        raise AudioFileError(f"{path}: cannot write {suffix or 'a file without a suffix'}; "
                             "give a .wav, .flac, .ogg or .mp3 file name")


def save_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono `audio` in the format its suffix names (WAV, FLAC, OGG Vorbis or MP3), atomically."""
    check_audio_suffix(path)
    file_format, subtype = AUDIO_FILE_FORMATS[Path(path).suffix.lower()]
    if file_format == "WAV":
        save_wav(path, audio, sample_rate)
        return
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(samples)):
        raise AudioFileError("audio contains NaN or infinite samples")
    data = io.BytesIO()
    try:
        soundfile.write(data, np.clip(samples, -1.0, 1.0), int(sample_rate), format=file_format, subtype=subtype)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioFileError(f"cannot write {path} as {file_format} at {sample_rate} Hz: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        atomic_write_bytes(path, data.getvalue())
    except OSError as exc:
        raise AudioFileError(f"cannot write {path}: {exc.strerror or exc}") from None


def load_wav(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file (WAV, FLAC, OGG...) as mono float32; resample to `sample_rate` if given.

    Multi-channel audio is mixed down by averaging the channels. Returns (samples, rate).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file not found: {path}")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioFileError(f"cannot read audio file {path}: {reason}") from None
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if sample_rate is not None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise AudioFileError(f"invalid target sample rate {sample_rate!r}")
        if sample_rate != rate and len(mono):
            mono = soxr.resample(mono, rate, int(sample_rate), quality="HQ").astype(np.float32, copy=False)
        rate = int(sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)
