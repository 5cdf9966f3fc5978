"""Hostile and unlucky input, one test per reported repro: MIDI and project files, recovery files,
the CLI's error lines, and how files are written (modes, symlinks, leftovers of crashed saves)."""

from __future__ import annotations

import base64
import json
import os
import stat
import struct
import subprocess
import sys
import time

import pytest

from engine.cli import main
from engine.music import (
    Clip,
    MidiFileError,
    Note,
    TempoChange,
    TimeSignature,
    atomic_write_bytes,
    max_clip_tick,
)
from engine.project import Project, ProjectError, load_project, save_project

# PPQ 1 with a 1/8 time signature: 0 ticks per bar (Clip.bar_starts used to loop forever).
ZERO_TICK_BAR_MIDI = base64.b64decode("TVRoZAAAAAYAAAABAAFNVHJrAAAAFAD/WAQBAxgIAJA8UASAPAAA/y8A")
# PPQ 1, a note at tick 2^28 (cost seconds and GBs in bar loops, OverflowError in symusic).
FAR_NOTE_MIDI = base64.b64decode("TVRoZAAAAAYAAAABAAFNVHJrAAAAFP///3//AQF4AZA8UAGAPAAA/y8A")


def smf(ppq: int, track: bytes) -> bytes:
    """A one-track Standard MIDI File around raw track events (end of track appended)."""
    track += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, ppq) + b"MTrk" + struct.pack(">I", len(track)) + track


# ---------------------------------------------------------------------------- MIDI and clips
def test_zero_tick_bar_meter_is_ignored_with_a_note_and_bars_stay_finite():
    t0 = time.monotonic()
    clip, report = Clip.from_midi(ZERO_TICK_BAR_MIDI)
    assert "1/8" in report.summary() and "shorter than one tick" in report.summary()
    assert clip.ppq == 1 and clip.time_signature.ticks_per_bar(clip.ppq) >= 1
    assert clip.bar_starts(8) == [0, 4, 8]
    assert clip.last_bars(1).notes  # the CLI's --prompt-bars path (was a MemoryError)
    assert time.monotonic() - t0 < 1.0


def test_a_clip_cannot_hold_a_meter_whose_bar_has_no_ticks():
    with pytest.raises(MidiFileError, match="shorter than one tick at PPQ 1"):
        Clip([], 1, time_signatures=[TimeSignature(0, 1, 8)])


def test_far_note_is_refused_in_one_line_at_once():
    t0 = time.monotonic()
    with pytest.raises(MidiFileError, match="outside the longest clip") as info:
        Clip.from_midi(FAR_NOTE_MIDI)
    assert time.monotonic() - t0 < 1.0 and "\n" not in str(info.value)


def test_bar_queries_are_bounded_whatever_tick_is_asked_for():
    clip = Clip([Note(0, 60, 1, 80)], 1, time_signatures=[TimeSignature(0, 1, 4)])  # 1 tick per bar
    t0 = time.monotonic()
    starts = clip.bar_starts(2**62)
    assert len(starts) == max_clip_tick(1) + 1
    assert clip.bar_index_at(2**40) == max_clip_tick(1)
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("tempos, sigs, message", [
    ([TempoChange(0, 0.0)], [], "tempo 0.0 bpm"),
    ([TempoChange(0, float("nan"))], [], "tempo nan bpm"),
    ([TempoChange(0, -120.0)], [], "tempo -120.0 bpm"),
    ([], [TimeSignature(0, 0, 4)], "numerator"),
    ([], [TimeSignature(0, -3, 4)], "numerator"),
    ([], [TimeSignature(0, 4, 0)], "denominator"),
    ([], [TimeSignature(0, 4, 3)], "power of two"),
    ([], [TimeSignature(0, 4, 128)], "power of two"),
    ([TempoChange(0, 120.0), TempoChange(max_clip_tick(480) + 1, 90.0)], [], "outside the clip"),
])
def test_clip_maps_outside_musical_bounds_are_refused(tempos, sigs, message):
    with pytest.raises(MidiFileError, match=message):
        Clip([], 480, tempos, sigs)


def test_midi_time_signatures_outside_bounds_are_ignored_and_named():
    # 4/2^7 (a denominator of 128), 0/4 and 3/4 at tick 0: only the last is kept.
    meters = b"\x00\xff\x58\x04\x04\x07\x18\x08" + b"\x00\xff\x58\x04\x00\x02\x18\x08"
    meters += b"\x00\xff\x58\x04\x03\x02\x18\x08"
    clip, report = Clip.from_midi(smf(480, meters + b"\x00\x90\x3c\x50\x83\x60\x80\x3c\x00"))
    assert [(t.numerator, t.denominator) for t in clip.time_signatures] == [(3, 4)]
    assert "4/128" in report.summary() and "0/4" in report.summary()


def test_ppq_beyond_the_midi_header_range_is_refused():
    with pytest.raises(MidiFileError, match="PPQ"):
        Clip([], 0x8000)


# ---------------------------------------------------------------------------- project files
def project_text(clip: dict | None = None, **fields) -> str:
    data = {"format": "smart-studio-project", "version": 1,
            "clip": {"ppq": 480, "notes": [[0, 60, 480, 80]], "tempos": [[0, 120]],
                     "time_signatures": [[0, 4, 4]], **(clip or {})}}
    data.update(fields)
    return json.dumps(data)


HOSTILE_PROJECTS = {
    "denominator 0": (project_text({"time_signatures": [[0, 4, 0]]}), "denominator"),
    "denominator 3": (project_text({"time_signatures": [[0, 4, 3]]}), "power of two"),
    "numerator 0": (project_text({"time_signatures": [[0, 0, 4]]}), "numerator"),
    "numerator negative": (project_text({"time_signatures": [[0, -7, 4]]}), "numerator"),
    "ppq 1e999": (project_text({"ppq": 1e999}), "ppq inf"),
    "note 1e999": (project_text({"notes": [[1e999, 60, 480, 80]]}), "note value inf"),
    "loop 1e999": (project_text(loop={"start": 0, "end": 1e999}), "loop end inf"),
    "loop past the clip": (project_text(loop={"start": 0, "end": 2**40}), "beyond the longest clip"),
    "tempo 0": (project_text({"tempos": [[0, 0]]}), "tempo 0.0 bpm"),
    "tempo NaN": (project_text({"tempos": [[0, float("nan")]]}), "tempo nan bpm"),
    "tempo negative": (project_text({"tempos": [[0, -90]]}), "tempo -90.0 bpm"),
    "note at 2^62": (project_text({"notes": [[2**62, 60, 480, 80]]}), "outside the longest clip"),
    "200k nested brackets": ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    "5000-digit integer": (project_text({"ppq": 0}).replace('"ppq": 0', '"ppq": ' + "9" * 5000), "digits"),
    "ppq a string": (project_text({"ppq": "480"}), "ppq '480' is not a number"),
    "400-digit tempo": (project_text({"tempos": [[0, 10**400]]}), "tempo 1000.* is out of range"),
    "notes not rows": (project_text({"notes": [[0, 60]]}), "list of 4 numbers"),
    "soundfont not a path": (project_text(soundfont=["x"]), "soundfont"),
}


@pytest.mark.parametrize("name", list(HOSTILE_PROJECTS))
def test_hostile_project_fields_give_one_clear_line(tmp_path, name):
    from studio.files.documents import OpenError, read_any

    text, message = HOSTILE_PROJECTS[name]
    path = tmp_path / "hostile.smartproj"
    path.write_text(text)
    t0 = time.monotonic()
    with pytest.raises(ProjectError, match=message) as info:
        load_project(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300
    with pytest.raises(OpenError):  # what the studio's open_path (and `main.py FILE`) goes through
        read_any(path)
    assert time.monotonic() - t0 < 2.0


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recovery_skips_unreadable_files_and_offers_the_rest(tmp_path):
    from studio.files.autosave import RECOVERY_SUFFIX, find_orphans, write_recovery

    pid = dead_pid()
    good = Project(clip=Clip([Note(0, 60, 480, 80)]))
    write_recovery(tmp_path / f"autosave-{pid}-good{RECOVERY_SUFFIX}", good, None)
    bad = {
        "json": "{not json",
        "nested": "[" * 200_000,
        "denominator": json.dumps({"format": "smart-studio-recovery", "saved_at": 1,
                                   "project": json.loads(HOSTILE_PROJECTS["denominator 0"][0])}),
        "saved-at": json.dumps({"format": "smart-studio-recovery", "saved_at": "yesterday",
                                "project": {"format": "nope"}}),
        "binary": b"\xff\xfe\x00",
    }
    for name, content in bad.items():
        path = tmp_path / f"autosave-{pid}-{name}{RECOVERY_SUFFIX}"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    crashed = tmp_path / f".autosave-{pid}-x{RECOVERY_SUFFIX}.ab12cd34.tmp"  # a save killed mid-write
    crashed.write_text("{")
    os.utime(crashed, (time.time() - 3600,) * 2)
    found = find_orphans(tmp_path)
    assert [r.path.name for r in found] == [f"autosave-{pid}-good{RECOVERY_SUFFIX}"]
    assert found[0].project.clip.notes == good.clip.notes
    assert not crashed.exists()


# ---------------------------------------------------------------------------- the CLI
def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    """The command failed with its reason as one `smart COMMAND: ...` line, no traceback (a
    library's progress output, e.g. loading model weights, may come before it)."""
    assert code != 0
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("smart "), err
    return last


@pytest.fixture
def sketch(tmp_path):
    path = tmp_path / "sketch.mid"
    Clip([Note(0, 60, 480, 80), Note(480, 64, 480, 80)]).save_midi(path)
    return path


def test_render_to_a_folder_or_unwritable_place_is_one_line(capsys, sketch, tmp_path):
    err = one_line_error(*run(capsys, "render", sketch, tmp_path, "--sample-rate", 16000)[::2])
    assert "is a folder" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = one_line_error(*run(capsys, "render", sketch, blocker / "o.wav", "--sample-rate", 16000)[::2])
    assert str(blocker) in err


def test_write_refused_by_the_system_is_one_line(capsys, sketch, tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    err = one_line_error(*run(capsys, "render", sketch, tmp_path / "o.wav", "--sample-rate", 16000)[::2])
    assert "Permission denied" in err
    assert not list(tmp_path.glob(".o.wav.*"))  # the temp file went with the failure


def test_existing_read_only_file_is_refused_not_replaced(capsys, sketch, tmp_path, monkeypatch):
    target = tmp_path / "o.wav"
    target.write_bytes(b"keep")
    real_access = os.access
    # As a normal user sees a 0444 file (root may write anything, so the check is emulated here).
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(target) else real_access(p, mode))
    err = one_line_error(*run(capsys, "render", sketch, target, "--sample-rate", 16000)[::2])
    assert "read-only" in err and target.read_bytes() == b"keep"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write read-only files and folders")
def test_read_only_folder_and_file_are_one_line(capsys, sketch, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "o.wav").write_bytes(b"")
    os.chmod(folder / "o.wav", 0o444)
    err = one_line_error(*run(capsys, "render", sketch, folder / "o.wav", "--sample-rate", 16000)[::2])
    assert "read-only" in err
    os.chmod(folder, 0o555)
    try:
        err = one_line_error(*run(capsys, "render", sketch, folder / "n.wav", "--sample-rate", 16000)[::2])
        assert "Permission denied" in err
    finally:
        os.chmod(folder, 0o755)


def test_generate_out_an_existing_file_is_one_line(capsys, sketch, tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    err = one_line_error(*run(capsys, "generate", "--prompt", sketch, "--out", target)[::2])
    assert "is a file" in err


def test_render_longer_than_the_limit_is_one_line(capsys, tmp_path):
    path = tmp_path / "long.mid"
    # 700 quarters at 10 bpm: 70 minutes, past the 60-minute render limit.
    Clip([Note(0, 60, 480, 80), Note(700 * 480, 60, 480, 80)], 480, [TempoChange(0, 10.0)]).save_midi(path)
    err = one_line_error(*run(capsys, "render", path, tmp_path / "o.wav", "--sample-rate", 8000)[::2])
    assert "limit" in err


def test_far_ticks_are_one_line_for_every_command(capsys, tmp_path):
    path = tmp_path / "far.mid"
    path.write_bytes(FAR_NOTE_MIDI)
    for argv in (["render", path, tmp_path / "o.wav"], ["features", path],
                 ["generate", "--prompt", path, "--out", tmp_path / "g"]):
        err = one_line_error(*run(capsys, *argv)[::2])
        assert "outside the longest clip" in err


def test_engine_overflow_or_memory_error_is_one_line(capsys, sketch, tmp_path, monkeypatch):
    import engine.render

    for exc in (OverflowError("int too big to convert"), MemoryError()):
        def fail(*args, exc=exc, **kwargs):
            raise exc

        monkeypatch.setattr(engine.render, "render", fail)
        err = one_line_error(*run(capsys, "render", sketch, tmp_path / "o.wav")[::2])
        assert "too large" in err


# ---------------------------------------------------------------------------- how files are written
@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_saved_files_get_the_usual_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        Clip([Note(0, 60, 480, 80)]).save_midi(tmp_path / "a.mid")
        save_project(Project(), tmp_path / "a.smartproj")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.mid").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "a.smartproj").stat().st_mode) == mode


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_overwriting_keeps_the_file_mode(tmp_path):
    path = tmp_path / "a.mid"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_saving_over_a_symlink_writes_through_it(tmp_path):
    real = tmp_path / "real" / "song.smartproj"
    real.parent.mkdir()
    save_project(Project(), real)
    link = tmp_path / "link.smartproj"
    link.symlink_to(real)
    save_project(Project(clip=Clip([Note(0, 60, 480, 80)])), link)
    assert link.is_symlink()
    assert len(load_project(real).clip.notes) == 1


def test_a_crashed_saves_temp_file_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "song.smartproj"
    stale = tmp_path / ".song.smartproj.k3j4h5g6.tmp"
    stale.write_text("{")
    os.utime(stale, (time.time() - 3600,) * 2)
    in_progress = tmp_path / ".song.smartproj.00aa11bb.tmp"  # another writer's, seconds old: kept
    in_progress.write_text("{")
    other = tmp_path / ".other.smartproj.k3j4h5g6.tmp"
    other.write_text("{")
    os.utime(other, (time.time() - 3600,) * 2)
    save_project(Project(), path)
    assert not stale.exists() and in_progress.exists() and other.exists()
    assert load_project(path).clip.notes == []


@pytest.mark.parametrize("ppq", [1, 480, 0x7FFF])
def test_the_farthest_note_survives_a_midi_round_trip(ppq):
    clip = Clip([Note(max_clip_tick(ppq) - 1, 60, 1, 80)], ppq)
    back, _ = Clip.from_midi(clip.to_midi_bytes())
    assert back.notes == clip.notes
