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
from test_studio_support import boxes, make_window, window  # noqa: F401 - fixtures

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


# ============================================================================ issue 25: docs/security.md's promises
# ---------------------------------------------------------------------------- 1. jobs never vanish
def job_folder(jobs, name="20260101-000000-aaaaaa", state="completed", config=None, **fields) -> "os.PathLike":
    """A finished job's folder as a host leaves it (job.json, and events.jsonl when given)."""
    from pathlib import Path

    d = Path(jobs) / name
    d.mkdir(parents=True)
    events = fields.pop("events", None)
    data = {"id": name, "state": state, "created": 1.0, "config": {"steps": 2, **(config or {})}, **fields}
    (d / "job.json").write_text(json.dumps(data))
    if events is not None:
        (d / "events.jsonl").write_text("".join(line + "\n" for line in events))
    return d


@pytest.fixture
def jobs_app():
    """An in-process host with only the jobs routes (no model, no torch), on a jobs folder."""
    import contextlib

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from engine.host.jobs import JobManager, jobs_router

    @contextlib.contextmanager
    def start(jobs):
        manager = JobManager(jobs, python="/bin/false", poll_s=0.05)
        app = FastAPI()
        app.include_router(jobs_router(manager))
        with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
            yield client

    return start


def strict_json(text: str):
    """JSON as a strict parser reads it: a bare NaN or Infinity fails the test."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in an answer"))


def listed_jobs(client) -> dict:
    response = client.get("/v1/jobs")
    assert response.status_code == 200, response.text[:300]
    return {j["id"]: j for j in strict_json(response.text)["jobs"]}


@pytest.mark.parametrize("line", ['{"step": null}', '{"step": "x"}', '{"step": 1e400}', '{"step": NaN}',
                                  '{"step": 1, "elapsed_s": "abc"}', '{"step": 1, "steps_total": "x"}',
                                  '{"step": 1, "loss": NaN, "elapsed_s": Infinity}', '{"step": true}',
                                  "[" * 100_000, b"\xff\xfe{".decode("latin-1")])
def test_a_wrong_typed_event_line_never_breaks_the_job_list(tmp_path, jobs_app, line):
    good = job_folder(tmp_path, "20260101-000000-aaaaaa", events=['{"step": 1, "elapsed_s": 2.0}'])
    bad = job_folder(tmp_path, "20260101-000000-bbbbbb", events=['{"step": 1, "elapsed_s": 2.0}', line])
    with jobs_app(tmp_path) as client:
        listed = listed_jobs(client)
        assert set(listed) == {good.name, bad.name}
        assert listed[good.name]["progress"]["step"] == 1
        detail = client.get(f"/v1/jobs/{bad.name}")
        assert detail.status_code == 200, detail.text[:300]
        strict_json(detail.text)


@pytest.mark.parametrize("fields", [{"created": "yesterday"}, {"created": float("nan")}, {"created": [1]},
                                    {"config": {"steps": "many"}}, {"config": {"steps": 1e300}},
                                    {"attempts": "x"}, {"started": {"a": 1}},
                                    {"result": {"steps_total": "x"}, "config": {"steps": None}}])
def test_wrong_typed_job_json_fields_never_break_the_job_list(tmp_path, jobs_app, fields):
    fields = dict(fields)
    config = fields.pop("config", None)
    good = job_folder(tmp_path, "20260101-000000-aaaaaa")
    bad = job_folder(tmp_path, "20260101-000000-bbbbbb", config=config, **fields)
    with jobs_app(tmp_path) as client:
        assert set(listed_jobs(client)) == {good.name, bad.name}
        detail = client.get(f"/v1/jobs/{bad.name}")
        assert detail.status_code == 200, detail.text[:300]
        strict_json(detail.text)


def test_a_deeply_nested_job_json_does_not_stop_the_host(tmp_path, jobs_app):
    good = job_folder(tmp_path, "20260101-000000-aaaaaa")
    deep = tmp_path / "20260101-000000-bbbbbb"
    deep.mkdir()
    (deep / "job.json").write_text("[" * 200_000 + "]" * 200_000)
    with jobs_app(tmp_path) as client:  # the host starts (was "Application startup failed")
        listed = listed_jobs(client)
    assert listed[good.name]["state"] == "completed"
    assert listed[deep.name]["state"] == "damaged" and "unreadable" in listed[deep.name]["error"]


def test_a_damaged_run_config_is_named_damaged_not_missing(tmp_path, jobs_app):
    d = tmp_path / "20260101-000000-aaaaaa"
    d.mkdir()
    (d / "job.json").write_text("{")
    (d / "run_config.json").write_text('{"steps": ')
    with jobs_app(tmp_path) as client:
        error = listed_jobs(client)[d.name]["error"]
    assert "run_config.json is damaged" in error and "has no run_config.json" not in error


def test_a_host_killed_during_a_taste_submission_leaves_no_job(tmp_path, jobs_app, monkeypatch):
    from engine.host.jobs import JobManager, TastePair
    from engine.preferences import PreferenceSet

    midi = Clip([Note(0, 60, 480, 80)]).to_midi_bytes()
    manager = JobManager(tmp_path)

    def killed(self, judgements):  # the host dies half-way through writing the pairs
        list(judgements)[0]
        raise KeyboardInterrupt

    monkeypatch.setattr(PreferenceSet, "record_many", killed)
    with pytest.raises(KeyboardInterrupt):
        manager.submit_taste({"model": "m"}, [TastePair("A", midi, midi, None, None)])
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-made, not even a hidden folder
    # A kill -9 leaves the hidden folder it was writing: never listed as a job, removed when stale.
    partial = tmp_path / ".20260101-000000-cccccc.partial"
    (partial / "pairs").mkdir(parents=True)
    os.utime(partial, (time.time() - 3600,) * 2)
    # An older host's leftover (pairs/ and no job.json) is listed as a damaged *taste* job.
    old = tmp_path / "20260101-000000-dddddd"
    (old / "pairs").mkdir(parents=True)
    with jobs_app(tmp_path) as client:
        listed = listed_jobs(client)
    assert set(listed) == {old.name} and listed[old.name]["state"] == "damaged"
    assert listed[old.name]["kind"] == "taste-tune"
    assert not partial.exists()


def test_a_taste_submission_appears_whole(tmp_path):
    from engine.host.jobs import JobManager, TastePair

    midi = Clip([Note(0, 60, 480, 80)]).to_midi_bytes()
    job = JobManager(tmp_path).submit_taste({"model": "m"}, [TastePair("A", midi, midi, midi, "ab")] * 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [job.id]
    assert json.loads((job.dir / "job.json").read_text())["config"]["pairs"] == str(job.dir / "pairs")
    assert len((job.dir / "pairs" / "preferences.jsonl").read_text().splitlines()) == 3


def test_the_event_stream_never_emits_nan(tmp_path, jobs_app):
    d = job_folder(tmp_path, events=['{"step": 1, "loss": NaN, "kl": Infinity, "reward_mean": -Infinity}',
                                     '{"step": 2, "loss": 0.5}'])
    with jobs_app(tmp_path) as client:
        response = client.get(f"/v1/jobs/{d.name}/events")
    assert response.status_code == 200
    lines = [strict_json(line) for line in response.text.splitlines()]
    steps = [line for line in lines if "step" in line and "event" not in line and not line.get("done")]
    assert [s["step"] for s in steps] == [1, 2] and steps[0]["loss"] is None and lines[-1]["done"]


# ---------------------------------------------------------------------------- 2. a damaged taste profile
DAMAGED_PREFERENCE_LINES = {"not UTF-8": b"\xff\n", "100k deep": b"[" * 100_000 + b"\n",
                            "not an object": b"[1, 2]\n", "torn": b'{"id": "000002", "choi',
                            "wrong types": b'{"choice": "A", "a": "x", "b": 3, "prompt": 5, "source": [1]}\n'}


def preference_set_with(tmp_path, damage: bytes):
    from engine.preferences import PreferenceSet

    prefs = PreferenceSet(tmp_path / "profile")
    midi = Clip([Note(0, 60, 480, 80)]).to_midi_bytes()
    prefs.record(a_midi=midi, b_midi=midi, prompt_midi=None, choice="A", source="ab")
    with open(prefs.path, "ab") as f:
        f.write(damage)
    return prefs, midi


@pytest.mark.parametrize("name", list(DAMAGED_PREFERENCE_LINES))
def test_a_damaged_preference_line_is_skipped_and_kept(tmp_path, name):
    prefs, midi = preference_set_with(tmp_path, DAMAGED_PREFERENCE_LINES[name])
    before = prefs.path.read_bytes()
    assert [p.choice for p in prefs.pairs()] == ["A"]
    assert prefs.summary()["pairs"] >= 1 and prefs.tally() == {}
    assert prefs.damaged_lines() == 1 or name == "wrong types"
    prefs.record(a_midi=midi, b_midi=midi, prompt_midi=None, choice="B")  # recording goes on
    assert prefs.path.read_bytes().startswith(before)  # nothing of the file is lost
    assert [p.choice for p in prefs.pairs()] == ["A", "B"]


@pytest.mark.parametrize("name", ["not UTF-8", "100k deep"])
def test_smart_taste_fit_on_a_damaged_profile_is_not_a_traceback(capsys, tmp_path, name):
    prefs, _ = preference_set_with(tmp_path, DAMAGED_PREFERENCE_LINES[name])
    code, _out, err = run(capsys, "taste", "fit", prefs.dir, "--out", tmp_path / "taste")
    assert "Traceback" not in err and code in (0, 2), err


@pytest.mark.parametrize("name", ["not UTF-8", "100k deep"])
def test_a_damaged_taste_profile_does_not_stop_the_studio(tmp_path, make_window, name):
    profile = tmp_path / "profile-preferences"  # make_window's SMART_PREFERENCES_DIR
    profile.mkdir()
    (profile / "preferences.jsonl").write_bytes(DAMAGED_PREFERENCE_LINES[name])
    window = make_window()
    assert window.isVisible()


# ---------------------------------------------------------------------------- 3. taste tuning on 1/4 music
def test_taste_pairs_of_one_four_music_are_read_in_the_model_meter():
    from engine.tokenizer import default_tokenizer
    from training.taste import pair_ids

    tok = default_tokenizer()
    one_four = [TimeSignature(0, 1, 4)]  # most of POP909
    prompt = Clip([Note(i * 480, 60 + i, 400, 80) for i in range(8)], 480, time_signatures=one_four)
    a = Clip([Note(8 * 480 + i * 480, 64, 400, 80) for i in range(4)], 480, time_signatures=one_four)
    b = Clip([Note(8 * 480 + i * 480, 67, 400, 80) for i in range(4)], 480, time_signatures=one_four)
    for p in (prompt, None):  # with its prompt, and procedural (no prompt file)
        ids, chosen, rejected = pair_ids(tok, a, b, p)  # was "time signature 1/4 is not in the vocabulary"
        assert ids[0] == tok.bos_id and chosen and rejected


# ---------------------------------------------------------------------------- 4. project views and history
@pytest.mark.parametrize("view", [{"left_quarter": 1e300}, {"top_row": 1e12}, {"row_height": float("inf")},
                                  {"px_per_quarter": -1e308}, {"left_quarter": -1e300, "top_row": -5}])
def test_a_project_view_out_of_range_opens(tmp_path, window, view):
    from engine.project import load_project

    state = {"px_per_quarter": 48.0, "row_height": 12, "left_quarter": 0.0, "top_row": 40.0, **view}
    path = tmp_path / "v.smartproj"
    path.write_text(project_text(view=state).replace("Infinity", "1e400"))
    project = load_project(path)
    window.load_project(project, path)  # was OverflowError at launch
    assert window.editor.grid.horizontalScrollBar().value() >= 0


def test_a_recovery_file_with_an_out_of_range_view_is_recovered(tmp_path, window):
    from studio.files.autosave import RECOVERY_SUFFIX, find_orphans, write_recovery

    project = Project(clip=Clip([Note(0, 60, 480, 80)]), view={"px_per_quarter": 48.0, "row_height": 12,
                                                               "left_quarter": 1e300, "top_row": 1e12})
    write_recovery(tmp_path / f"autosave-{dead_pid()}-x{RECOVERY_SUFFIX}", project, None)
    [rec] = find_orphans(tmp_path)
    window.recover(rec)  # was OverflowError on every start
    assert window.editor.doc.notes == project.clip.notes


DAMAGED_HISTORY = {
    "settings a list": {"settings": [1, 2]},
    "scores not numbers": {"scores": [{"CE": "high"}]},
    "accepted a string": {"accepted": "x"},
    "candidates a string": {"candidates": "many"},
    "model a string": {"model": "tiny"},
    "model path a number": {"model": {"path": 5}},
    "span of one bar": {"span_bars": [1]},
    "settings of wrong types": {"settings": {"temperature": "hot", "bars": "2", "key_lock": 1, "key_root": 99}},
    "elapsed a string": {"elapsed_s": "slow", "time": 5, "mode": None},
}


@pytest.mark.parametrize("name", list(DAMAGED_HISTORY))
def test_a_damaged_history_entry_is_read_as_far_as_it_goes(name):
    from studio.generate.history import GenerationHistory
    from studio.generate.session import describe_request

    good = {"id": "good", "time": "2026-01-01T00:00:00", "mode": "continue", "settings": {"bars": 2},
            "status": "completed", "scores": [{"CE": 7.5}], "accepted": 0, "model": {"path": "/m/tiny"}}
    damaged = {**good, "id": "bad", **DAMAGED_HISTORY[name]}
    project = Project(history=[good, damaged, "not an entry"])
    history = GenerationHistory(project)  # was a traceback and an empty history
    assert [r.id for r in history.requests] == ["good", "bad"]
    for req in history.requests:  # what the history list shows of each
        describe_request(req)
        best = max((s.get("CE", 0) for s in req.scores if s), default=None)
        assert best is None or best + 0 == best
        assert req.accepted is None or int(req.accepted) + 1
        assert not req.model.get("path") or isinstance(req.model["path"], str)
    assert project.history[1] == damaged  # the file keeps what it had


def test_a_damaged_history_shows_in_the_studio(window):
    project = Project(history=[{"id": f"r{i}", "time": "t", "mode": "continue", **shape}
                               for i, shape in enumerate(DAMAGED_HISTORY.values())])
    window.load_project(project, None)
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()
    assert window.generate_panel.history_tree.topLevelItemCount() == len(DAMAGED_HISTORY)


def test_an_unreadable_autosave_is_named_for_the_musician(tmp_path, window):
    from studio.files.autosave import RECOVERY_SUFFIX

    bad = window.autosaver.directory / f"autosave-{dead_pid()}-bad{RECOVERY_SUFFIX}"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"\xff\xfe")
    assert window.recoverable() == []
    text = window.unreadable_recovery_text()
    assert text and str(bad) in text and bad.exists()  # told, and kept


# ---------------------------------------------------------------------------- 5. 400, not 500
@pytest.mark.parametrize("route", ["/v1/train", "/v1/taste/tune"])
def test_deeply_nested_json_to_a_job_route_is_a_400(tmp_path, jobs_app, route):
    with jobs_app(tmp_path) as client:
        response = client.post(route, content=b'{"steps": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "nested too deeply" in response.json()["detail"]


@pytest.mark.parametrize("body", [{"model": "/tmp/a\x00b"}, {"prompts": "data:/tmp/a\x00b"},
                                  {"prompts": "data:/tmp/a\x00b:train"}])
def test_a_nul_byte_in_a_job_path_is_a_400(tmp_path, jobs_app, body):
    with jobs_app(tmp_path) as client:
        response = client.post("/v1/train", json={"model": str(tmp_path), "reward": "notes", **body})
    assert response.status_code == 400, response.text[:300]
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name[:2] == "20"]


@pytest.fixture(scope="module")
def host_app(tmp_path_factory):
    from fastapi.testclient import TestClient

    from engine.host.server import create_app
    from engine.policy import Policy

    model = tmp_path_factory.mktemp("host") / "tiny"
    Policy.create("tiny", seed=0).save(model)
    app = create_app(Policy.load(model))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        client.model_dir = model
        yield client


def test_a_nul_byte_in_the_activate_path_is_a_4xx(host_app):
    response = host_app.post("/v1/models/activate", json={"path": "/tmp/a\x00b"})
    assert 400 <= response.status_code < 500, response.text[:300]


@pytest.mark.parametrize("damage", ["no layers", "junk tokenizer", "tokenizer a list"])  # was a 500, 500, 400
def test_a_broken_model_folder_is_refused_by_activate(host_app, tmp_path, damage):
    import shutil

    model = tmp_path / "broken"
    shutil.copytree(host_app.model_dir, model)
    if damage == "no layers":
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 0}))
    else:
        (model / "remi_tokenizer.json").write_text("{}" if damage == "junk tokenizer" else "[1, 2]")
    response = host_app.post("/v1/models/activate", json={"path": str(model)})
    assert response.status_code == 400, response.text[:300]
    assert host_app.get("/v1/models").json()["active"]["path"] == str(host_app.model_dir)


def test_deeply_nested_json_to_a_model_route_is_a_4xx(host_app):
    response = host_app.post("/v1/generate", content=b'{"candidates": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                             headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text[:300]


# ---------------------------------------------------------------------------- 6. no coercion over HTTP
@pytest.mark.parametrize("field, value", [("candidates", "4"), ("candidates", True), ("candidates", 4.0),
                                          ("bars", 1.0), ("bars", "2"), ("first_note", "yes"), ("score", "false"),
                                          ("score", 1), ("allowed_pitches", [True]), ("allowed_pitches", ["60"]),
                                          ("temperature", "1.0"), ("temperature", True), ("seed", "7"),
                                          ("max_new_tokens", 8.0), ("at_tick", "0")])
def test_generate_fields_are_not_coerced(field, value):
    from pydantic import ValidationError

    from engine.api import GenerateRequest

    with pytest.raises(ValidationError):
        GenerateRequest.model_validate({"candidates": 1, "bars": 1, field: value})
    assert GenerateRequest.model_validate({"candidates": 1, "bars": 1, "temperature": 1, "top_p": 1})


@pytest.mark.parametrize("body", [{"candidates": "1"}, {"bars": 1.0}, {"score": "false"}])
def test_a_coerced_type_over_http_is_a_422(host_app, body):
    response = host_app.post("/v1/generate", json={"candidates": 1, "bars": 1, "max_new_tokens": 4, **body})
    assert response.status_code == 422, response.text[:300]


def test_activate_and_score_fields_are_not_coerced():
    from pydantic import ValidationError

    from engine.api import ActivateRequest, InfillSpan, ScoreRequest

    for model, body in ((ActivateRequest, {"path": 5}), (ScoreRequest, {"midi": 5}),
                        (InfillSpan, {"start_bar": "0", "end_bar": 1}), (InfillSpan, {"start_bar": 0, "end_bar": 1.0})):
        with pytest.raises(ValidationError):
            model.model_validate(body)


# ---------------------------------------------------------------------------- 7. cost of the pairs
def test_a_batch_of_pairs_is_written_once(tmp_path, monkeypatch):
    from engine.preferences import PreferenceSet

    midi = Clip([Note(0, 60, 480, 80)]).to_midi_bytes()
    prefs = PreferenceSet(tmp_path / "pairs")
    prefs.record(a_midi=midi, b_midi=midi, prompt_midi=None, choice="A")
    reads, syncs = [], []
    real_read, real_fsync = PreferenceSet._read, os.fsync
    monkeypatch.setattr(PreferenceSet, "_read", lambda self: reads.append(1) or real_read(self))
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd) or real_fsync(fd))
    n = 300
    recs = prefs.record_many(dict(a_midi=midi, b_midi=midi, prompt_midi=midi, choice="AB"[i % 2]) for i in range(n))
    assert len(reads) == 1 and len(syncs) <= 3  # the set read once; the lines and the tally synced once
    assert [r["id"] for r in recs] == [f"{i:06d}" for i in range(2, n + 2)]
    monkeypatch.undo()
    assert len(prefs.pairs()) == n + 1 and len(set(p.a for p in prefs.pairs())) == n + 1


def test_pairs_per_taste_request_are_capped_by_the_contract():
    from engine.api import MAX_TASTE_PAIRS
    from engine.errors import UserError
    from engine.host.jobs import SubmissionRules, check_taste_submission

    rules = SubmissionRules(model_dir=lambda p: __import__("pathlib").Path(p))
    body = {"model": "m", "pairs": [{"choice": "A", "a": "", "b": ""}] * (MAX_TASTE_PAIRS + 1)}
    t0 = time.monotonic()
    with pytest.raises(UserError, match=f"at most {MAX_TASTE_PAIRS} pairs"):
        check_taste_submission(body, rules)
    assert time.monotonic() - t0 < 1.0  # refused before any MIDI is decoded


# ---------------------------------------------------------------------------- 8. the CLI
JUNK_CHECKPOINTS = {"hello world": b"hello world", "empty": b"", "zeros": b"\0" * 4096, "pickle": b"\x80\x04K\x01.",
                    "random": bytes(range(256)) * 8, "text": b"root:x:0:0:root:/root:/bin/bash\n"}


@pytest.mark.parametrize("name", list(JUNK_CHECKPOINTS))
def test_junk_maa_checkpoints_are_refused_in_one_line(tmp_path, name):
    from engine.maa_weights import MAACheckpointError, check_checkpoint

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(JUNK_CHECKPOINTS[name])
    with pytest.raises(MAACheckpointError, match="not a readable checkpoint") as info:
        check_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_zip_that_is_not_a_torch_checkpoint_is_refused(tmp_path):
    import zipfile

    from engine.maa_weights import MAACheckpointError, check_checkpoint

    path = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(MAACheckpointError, match="not one torch.save wrote"):
        check_checkpoint(path)


@pytest.mark.parametrize("where", ["folder", "device", "half hf", "bad safetensors"])
def test_maa_locations_that_hold_no_weights_are_refused(tmp_path, where):
    from engine.maa_weights import MAACheckpointError, check_checkpoint

    path = tmp_path / "maa"
    path.mkdir()
    if where == "device":
        path = "/dev/zero"
    elif where == "half hf":
        (path / "config.json").write_text("{}")
    elif where == "bad safetensors":
        (path / "config.json").write_text("{}")
        (path / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(MAACheckpointError) as info:
        check_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_torch_checkpoint_passes_the_check(tmp_path):
    import torch

    from engine.maa_weights import check_checkpoint

    torch.save({"x": torch.zeros(2)}, tmp_path / "checkpoint.pt")
    assert check_checkpoint(tmp_path) == tmp_path / "checkpoint.pt"


@pytest.mark.parametrize("how", ["--maa", "env"])
def test_score_with_a_text_file_as_maa_weights_is_one_line(capsys, sketch, monkeypatch, how):
    args = ["score", sketch]
    if how == "--maa":
        args += ["--maa", "/etc/passwd"]
    else:
        monkeypatch.setenv("SMART_MAA_CHECKPOINT", "/etc/passwd")
    err = one_line_error(*run(capsys, *args)[::2])  # was IndexError
    assert "/etc/passwd is not a readable checkpoint" in err


def test_serve_with_a_text_file_as_maa_weights_says_why():
    from engine.scorer import MAACheckpointError, MAAScorer

    with pytest.raises(MAACheckpointError, match="/etc/passwd is not a readable checkpoint"):
        MAAScorer.load("/etc/passwd")  # `smart serve --maa` shows this as its MAA reason


def test_features_of_a_never_ending_file_is_one_line():
    import resource

    def at_most_4_gb():  # a regression reads until memory runs out: here it fails, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "engine.cli", "features", "/dev/zero"], capture_output=True,
                          text=True, timeout=120, preexec_fn=at_most_4_gb,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-500:]
    assert "never ends" in done.stderr.strip().splitlines()[-1]


def test_taste_fit_refuses_a_negative_min_pairs(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["taste", "fit", str(tmp_path), "--out", str(tmp_path / "t"), "--min-pairs", "-1"])
    assert info.value.code == 2 and "must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("maa", [None, "/etc/passwd"])
def test_grpo_with_an_maa_reward_and_no_weights_fails_before_training(tmp_path, monkeypatch, maa):
    from engine.errors import UserError
    from training.grpo import _check_maa_weights

    monkeypatch.setenv("SMART_MAA_CHECKPOINT", str(tmp_path / "none"))
    config = type("Config", (), {"maa": maa})()
    with pytest.raises(UserError, match="MAA weights unavailable"):
        _check_maa_weights(config)


# ---------------------------------------------------------------------------- 9. an orphaned local host
def test_a_host_whose_parent_is_killed_ends_even_while_it_loads(tmp_path):
    """`smart serve --parent-pid` (what LocalHost passes): kill -9 of the parent ends the host."""
    import signal

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parent = subprocess.Popen(["sh", "-c", f"{sys.executable} -m engine.cli serve --port 0 --threads 1 "
                               f"--jobs-dir {tmp_path} --parent-pid $$ >{tmp_path / 'host.log'} 2>&1 & echo $!; sleep 600"],
                              stdout=subprocess.PIPE, text=True, cwd=root)
    host_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 120  # importing torch on a busy core, then at most a poll
    while time.monotonic() < deadline and _pid_running(host_pid):
        time.sleep(0.2)
    running = _pid_running(host_pid)
    if running:
        os.kill(host_pid, signal.SIGKILL)
    assert not running, "the host outlived its parent"
    assert "the process that started this host" in (tmp_path / "host.log").read_text()  # and said why


@pytest.mark.slow  # starts a whole local host (a minute or two on a busy 2-core machine)
def test_a_local_host_ends_with_the_process_that_started_it(tmp_path):
    """kill -9 of the studio (here: a process that started a LocalHost) ends its host too."""
    import signal

    script = ("import sys, time\n"
              "from engine.host_client import LocalHost\n"
              f"h = LocalHost(extra_args=['--threads', '1', '--decode-weights', 'model', '--jobs-dir', {str(tmp_path)!r}])\n"
              "h.start()\n"
              "print(h.process.pid, flush=True)\n"
              "time.sleep(600)\n")
    studio = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        host_pid = int(studio.stdout.readline())
        os.kill(studio.pid, signal.SIGKILL)
        studio.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _pid_running(host_pid):
            time.sleep(0.2)
        assert not _pid_running(host_pid), "the host outlived its studio"
    finally:
        if studio.poll() is None:
            studio.kill()


def _pid_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


# ---------------------------------------------------------------------------- 10. writes, and meter notes
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_saving_to_a_device_is_refused_and_the_device_kept(tmp_path):
    """The repro was `/dev/full` (reported "Saved" and replaced the device node); a FIFO is a file that is
    not a regular file too, and a regression replaces only this test's own."""
    fifo = tmp_path / "device"
    os.mkfifo(fifo)
    with pytest.raises(ProjectError, match="not a regular file"):
        save_project(Project(), fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(OSError, match="not a regular file"):
        Clip([Note(0, 60, 480, 80)]).save_midi(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_the_host_keeps_the_note_about_a_meter_it_ignored():
    from types import SimpleNamespace

    from engine.api import GenerateRequest
    from engine.host.server import _prepare_prompt
    from engine.meter import model_meter

    state = SimpleNamespace(policy=SimpleNamespace(tokenizer=SimpleNamespace(model_meter=model_meter)))
    body = GenerateRequest(prompt_midi=base64.b64encode(ZERO_TICK_BAR_MIDI).decode(), candidates=1, bars=1)
    _clip, meter_note = _prepare_prompt(state, body)
    assert meter_note and "1/8" in meter_note  # was null
