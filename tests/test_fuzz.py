"""Property-based fuzzing (hypothesis) of everything that takes outside input: MIDI bytes, clip
fields, project JSON and the host's HTTP payloads.

The property everywhere: hostile input ends in the entry point's one-line error (MidiFileError,
ProjectError, a 4xx) or in a clip that every bar/tick query, the MIDI writer and JSON handle
quickly. Each test is bounded (max_examples; a per-example deadline catches runaway loops;
pytest-timeout catches a hang), so the file takes about half a minute on 2 cores.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.music import (
    MAX_BPM,
    MAX_PPQ,
    MIN_BPM,
    Clip,
    MidiFileError,
    Note,
    TempoChange,
    TimeSignature,
    check_notes,
    max_clip_tick,
)
from engine.host.jobs import Job, JobManager, tail_events
from engine.preferences import PreferenceSet
from engine.project import Project, ProjectError

FUZZ = settings(max_examples=150, deadline=timedelta(seconds=2), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# A runaway loop fails the test instead of hanging CI (the limit includes importing transformers
# for the host's fixture, which takes a minute on a busy 2-core machine).
pytestmark = pytest.mark.timeout(300)


def assert_usable(clip: Clip) -> None:
    """What the editor, tokenizer, renderer and host do with a clip, all finishing at once."""
    assert 1 <= clip.ppq <= MAX_PPQ
    check_notes(clip.notes, clip.ppq)
    assert all(math.isfinite(t.bpm) and MIN_BPM <= t.bpm <= MAX_BPM for t in clip.tempos)
    assert all(ts.ticks_per_bar(clip.ppq) >= 1 for ts in clip.time_signatures)
    bars = clip.num_bars
    assert len(clip.bar_starts()) <= max_clip_tick(clip.ppq) + 1
    clip.bar_tick(bars + 64)
    clip.last_bars(2)
    assert math.isfinite(clip.seconds_at(clip.end_tick))
    back = Clip.from_dict(json.loads(json.dumps(clip.to_dict())))
    assert (back.notes, back.tempos, back.time_signatures) == (clip.notes, clip.tempos, clip.time_signatures)
    Clip.from_midi(clip.to_midi_bytes())  # symusic writes and reads it back (no OverflowError)


# ---------------------------------------------------------------------------- MIDI bytes
def vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


deltas = st.one_of(st.integers(0, 960), st.integers(0, 2**28 - 1))
midi_byte = st.integers(0, 127)
events = st.one_of(
    st.builds(lambda d, p, v: vlq(d) + bytes([0x90, p, v]), deltas, midi_byte, midi_byte),  # note on
    st.builds(lambda d, p: vlq(d) + bytes([0x80, p, 0]), deltas, midi_byte),  # note off
    st.builds(lambda d, v: vlq(d) + bytes([0xB0, 64, v]), deltas, midi_byte),  # sustain pedal
    st.builds(lambda d, us: vlq(d) + b"\xff\x51\x03" + us.to_bytes(3, "big"), deltas,
              st.integers(0, 2**24 - 1)),  # tempo: µs per quarter, 0 included
    st.builds(lambda d, n, e: vlq(d) + bytes([0xFF, 0x58, 4, n, e, 24, 8]), deltas,
              st.integers(0, 255), st.integers(0, 255)),  # time signature: numerator, log2 denominator
    st.builds(lambda d, c: vlq(d) + bytes([0xC0, c]), deltas, midi_byte),  # program change
)


@st.composite
def smf_files(draw) -> bytes:
    ppq = draw(st.one_of(st.integers(1, 960), st.integers(0, 0xFFFF)))
    tracks = []
    for _ in range(draw(st.integers(1, 3))):
        body = b"".join(draw(st.lists(events, max_size=24))) + b"\x00\xff\x2f\x00"
        tracks.append(b"MTrk" + struct.pack(">I", len(body)) + body)
    data = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), ppq) + b"".join(tracks)
    if draw(st.booleans()):  # damage: cut or flip bytes
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=8))
    return data


def read_midi_or_refuse(data: bytes) -> None:
    try:
        clip, report = Clip.from_midi(data)
    except MidiFileError as exc:
        assert "\n" not in str(exc)
        return
    assert_usable(clip)
    assert "\n" not in report.summary()


@FUZZ
@given(smf_files())
def test_structured_midi_files_are_read_or_refused(data):
    read_midi_or_refuse(data)


@FUZZ
@given(st.binary(max_size=300).map(lambda b: b"MThd\x00\x00\x00\x06" + b))
def test_random_bytes_after_a_midi_header_are_read_or_refused(data):
    read_midi_or_refuse(data)


# ---------------------------------------------------------------------------- clip fields
hostile_numbers = st.one_of(
    st.integers(-5, 5000),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, 3, 7, 8, 64, 128, 0x7FFF, 0x8000, 2**28, 2**31, 2**62, 10**400, 1e999, -1e999]),
)
json_junk = st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=3))
field = st.one_of(hostile_numbers, hostile_numbers, json_junk)


@FUZZ
@given(
    ppq=field,
    notes=st.one_of(st.lists(st.lists(field, min_size=4, max_size=4), max_size=6), json_junk),
    tempos=st.one_of(st.lists(st.lists(field, min_size=2, max_size=2), max_size=3), json_junk),
    sigs=st.one_of(st.lists(st.lists(field, min_size=3, max_size=3), max_size=3), json_junk),
)
def test_clip_json_fields_are_read_or_refused(ppq, notes, tempos, sigs):
    try:
        clip = Clip.from_dict({"ppq": ppq, "notes": notes, "tempos": tempos, "time_signatures": sigs})
    except MidiFileError as exc:
        assert "\n" not in str(exc)
        return
    assert_usable(clip)


small = st.integers(-3, 3000)


@FUZZ
@given(
    ppq=st.one_of(st.integers(-2, 64), st.integers(0, 0x10000)),
    notes=st.lists(st.builds(Note, small, st.integers(0, 127), st.integers(1, 2000), st.integers(1, 127)),
                   max_size=8),
    tempos=st.lists(st.builds(TempoChange, small, st.floats(allow_nan=True, allow_infinity=True)), max_size=3),
    sigs=st.lists(st.builds(TimeSignature, small, st.integers(-2, 300), st.integers(-2, 300)), max_size=3),
)
def test_clips_built_in_code_keep_the_bounds(ppq, notes, tempos, sigs):
    try:
        clip = Clip(check_notes(notes, max(ppq, 1)), ppq, tempos, sigs)
    except MidiFileError as exc:
        assert "\n" not in str(exc)
        return
    assert_usable(clip)


# ---------------------------------------------------------------------------- project JSON
def valid_project() -> dict:
    return Project(clip=Clip([Note(0, 60, 480, 80), Note(480, 64, 240, 90)], 480,
                             [TempoChange(0, 100.0)], [TimeSignature(0, 3, 4)])).to_dict() | {
        "loop": {"start": 0, "end": 960, "enabled": True}, "soundfont": None}


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), hostile_numbers, st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


def paths(value, prefix=()):
    """Every place in a JSON value that a mutation can replace."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths(item, prefix + (i,))


PROJECT_PATHS = [p for p in paths(valid_project()) if p]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PROJECT_PATHS), json_values), min_size=1, max_size=3))
def test_mutated_projects_open_or_give_one_line(mutations):
    data = valid_project()
    for path, value in mutations:
        target = data
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced the container
    text = json.dumps(data)  # NaN/Infinity literals included, as Python's json reads them
    try:
        project = Project.from_json(text)
    except ProjectError as exc:
        assert "\n" not in str(exc)
        return
    assert_usable(project.clip)
    again = Project.from_json(project.to_json())
    assert again.to_dict() == project.to_dict()


@FUZZ
@given(st.one_of(json_values.map(json.dumps), st.text(max_size=200)))
def test_arbitrary_json_is_not_a_project(text):
    try:
        Project.from_json(text)
    except ProjectError as exc:
        assert "\n" not in str(exc)


# ---------------------------------------------------------------------------- host payloads
@pytest.fixture(scope="module")
def host_client():
    from fastapi.testclient import TestClient

    from engine.host.server import create_app
    from engine.policy import Policy

    app = create_app(Policy.create("tiny", seed=0))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client


GENERATE_FIELDS = ["prompt_midi", "candidates", "bars", "temperature", "top_p", "seed", "at_tick", "infill",
                   "allowed_pitches", "score", "first_note"]


@st.composite
def generate_bodies(draw) -> dict:
    body = {key: draw(json_values) for key in draw(st.lists(st.sampled_from(GENERATE_FIELDS), unique=True))}
    if draw(st.booleans()):
        body["prompt_midi"] = base64.b64encode(draw(smf_files())).decode()
    if draw(st.booleans()):
        body.update(candidates=draw(st.integers(1, 2)), bars=draw(st.integers(1, 2)))
    body["max_new_tokens"] = draw(st.one_of(st.integers(1, 8), json_values))
    if isinstance(body["max_new_tokens"], int) and not isinstance(body["max_new_tokens"], bool):
        body["max_new_tokens"] = min(body["max_new_tokens"], 8)  # a valid request stays a short one
    body["score"] = False
    return body


# 30 s: far above a quiet machine's worst example (under 1 s); a 10 s deadline failed on a loaded 2-core machine.
HOST_FUZZ = settings(FUZZ, max_examples=60, deadline=timedelta(seconds=30))


@HOST_FUZZ
@given(body=generate_bodies())
def test_generate_payloads_get_an_answer_never_a_500(host_client, body):
    try:
        response = host_client.post("/v1/generate", json=body)
    except ValueError:  # NaN/Infinity: not JSON the client can send
        return
    assert response.status_code in (200, 400, 413, 422), response.text[:300]
    if response.status_code == 200:
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert lines[0]["event"] == "started" and lines[-1]["event"] in ("done", "error")
    else:
        assert isinstance(response.json()["detail"], (str, list))


@HOST_FUZZ
@given(route=st.sampled_from(["/v1/generate", "/v1/score", "/v1/models/activate"]), body=json_values)
def test_any_json_body_on_any_route_is_answered(host_client, route, body):
    try:
        response = host_client.post(route, json=body)
    except ValueError:
        return
    assert response.status_code < 500 or response.status_code == 503, response.text[:300]


# The host repros of the robustness issue: both used to stall the event loop (bar loops).
ZERO_TICK_BAR_PROMPT = "TVRoZAAAAAYAAAABAAFNVHJrAAAAFAD/WAQBAxgIAJA8UASAPAAA/y8A"  # PPQ 1, 1/8
FAR_NOTE_PROMPT = "TVRoZAAAAAYAAAABAAFNVHJrAAAAFP///3//AQF4AZA8UAGAPAAA/y8A"  # PPQ 1, note at tick 2^28


def test_zero_tick_bar_prompt_is_answered_and_the_host_stays_up(host_client):
    body = {"prompt_midi": ZERO_TICK_BAR_PROMPT, "candidates": 1, "bars": 1, "max_new_tokens": 8, "score": False}
    response = host_client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    assert json.loads(response.text.splitlines()[-1])["event"] in ("done", "error")
    assert host_client.get("/v1/health").status_code == 200


def test_far_note_prompt_is_refused_with_the_reason(host_client):
    response = host_client.post("/v1/generate", json={"prompt_midi": FAR_NOTE_PROMPT, "candidates": 1, "bars": 1})
    assert response.status_code == 400
    assert "outside the longest clip" in response.json()["detail"]


# ---------------------------------------------------------------------------- job files (issue 25)
# The host lists every job folder it finds; whatever its job.json, events.jsonl and run_config.json
# hold, GET /v1/jobs, GET /v1/jobs/ID and the event stream answer with strict JSON (never a 500, never
# a bare NaN), and no folder vanishes from the list.
JOB_FIELDS = ["state", "created", "started", "finished", "queued_at", "attempts", "restarts", "pid", "error",
              "result", "name", "note", "config", "prompts", "files"]
CONFIG_FIELDS = ["steps", "kind", "model", "reward", "method"]
EVENT_FIELDS = ["step", "steps_total", "elapsed_s", "loss", "reward_mean", "kl", "diversity"]


def json_text(value) -> str:
    return json.dumps(value)  # NaN/Infinity literals included, as Python's json writes and reads them


@st.composite
def job_files(draw) -> dict:
    config = {"steps": 2, "reward": "notes"}
    config.update({k: draw(json_values) for k in draw(st.lists(st.sampled_from(CONFIG_FIELDS), unique=True))})
    job = {"state": "completed", "created": 1.0, "config": config}
    job.update({k: draw(json_values) for k in draw(st.lists(st.sampled_from(JOB_FIELDS), unique=True, max_size=4))})
    raw_job = draw(st.one_of(st.just(json_text(job)), st.just(json_text(job)), st.text(max_size=40),
                             st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)))
    event = st.one_of(
        st.dictionaries(st.sampled_from(EVENT_FIELDS), json_values, max_size=4).map(json_text),
        st.builds(lambda n: json_text({"step": n}), hostile_numbers),
        st.text(max_size=30), st.integers(1, 3000).map(lambda n: "[" * n))
    return {"job": raw_job, "events": draw(st.lists(event, max_size=6)),
            "run_config": draw(st.one_of(st.none(), st.just(json_text(config)), st.text(max_size=20)))}


def strict_json(value) -> None:
    json.loads(json.dumps(value, allow_nan=False))


@FUZZ
@given(files=job_files())
def test_fuzzed_job_files_are_listed_in_strict_json(files):
    import asyncio
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "20260101-000000-aaaaaa"
        d.mkdir()
        (d / "job.json").write_text(files["job"])
        (d / "events.jsonl").write_text("".join(line + "\n" for line in files["events"]))
        if files["run_config"] is not None:
            (d / "run_config.json").write_text(files["run_config"])
        manager = JobManager(tmp)
        with manager.lock:  # what JobManager.start does, without its watcher thread
            job = Job.load(d)
            manager.jobs[job.id] = job
        listed = manager.list()
        assert [j["id"] for j in listed] == [d.name]
        strict_json(listed)
        strict_json(manager.describe(job))
        if job.state in ("queued", "running"):
            return  # a stream would wait for the job to end

        async def stream() -> list[bytes]:
            return [line async for line in tail_events(manager, job, poll_s=0)]

        for line in asyncio.run(stream()):
            json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in the event stream"))


# ---------------------------------------------------------------------------- preference files (issue 25)
@st.composite
def preference_lines(draw) -> bytes:
    record = st.fixed_dictionaries({}, optional={
        "id": json_values, "choice": st.one_of(st.sampled_from(["A", "B", "tie", "a"]), json_values),
        "a": st.one_of(st.fixed_dictionaries({"midi": st.one_of(st.just("pairs/000001-a.mid"), json_values),
                                              "role": st.one_of(st.sampled_from(["base", "tuned"]), json_values)}),
                       json_values),
        "b": st.one_of(st.fixed_dictionaries({"midi": st.one_of(st.just("pairs/000001-b.mid"), json_values),
                                              "role": st.one_of(st.sampled_from(["base", "tuned"]), json_values)}),
                       json_values),
        "prompt": st.one_of(st.none(), st.just("pairs/000001-prompt.mid"), json_values),
        "preferred": json_values, "source": json_values})
    line = st.one_of(record.map(lambda r: json_text(r).encode()), st.binary(max_size=20),
                     st.integers(1, 3000).map(lambda n: b"[" * n))
    return b"\n".join(draw(st.lists(line, max_size=6)))


@FUZZ
@given(content=preference_lines())
def test_fuzzed_preference_files_are_read_and_kept(content):
    import tempfile
    from pathlib import Path

    midi = Clip([Note(0, 60, 480, 80)]).to_midi_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        prefs = PreferenceSet(Path(tmp))
        (prefs.dir / "pairs").mkdir()
        for name in ("000001-a.mid", "000001-b.mid", "000001-prompt.mid"):
            (prefs.dir / "pairs" / name).write_bytes(midi)
        prefs.path.write_bytes(content)
        prefs.pairs(), prefs.summary(), prefs.tally(), prefs.damaged_lines()
        prefs.record(a_midi=midi, b_midi=midi, prompt_midi=None, choice="A")
        assert prefs.path.read_bytes().startswith(content)  # nothing of the file is lost
        assert prefs.pairs()[-1].choice == "A"


# ---------------------------------------------------------------------------- project views and history (issue 25)
VIEW_KEYS = ["px_per_quarter", "row_height", "left_quarter", "top_row"]
HISTORY_FIELDS = ["id", "time", "mode", "settings", "allowed_pitches", "model", "host", "maa", "status",
                  "candidates", "scores", "accepted", "at_tick", "span_bars", "span_ticks", "placement",
                  "elapsed_s", "error", "meter_note", "reward", "beams", "budget_s", "steps", "rewards"]
SETTING_KEYS = ["candidates", "temperature", "top_p", "bars", "seed", "key_lock", "key_root", "key_scale", "low",
                "high", "placement", "search_reward"]


@pytest.fixture(scope="module")
def editor():
    from PySide6.QtWidgets import QApplication

    from studio.editor.document import SketchDocument
    from studio.editor.editor import PianoRollEditor

    app = QApplication.instance() or QApplication([])  # noqa: F841 - kept alive with the editor
    widget = PianoRollEditor(SketchDocument(Clip([Note(0, 60, 480, 80)])))
    widget.resize(800, 600)
    yield widget
    widget.deleteLater()


@settings(FUZZ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
@given(view=st.one_of(json_values, st.dictionaries(st.sampled_from(VIEW_KEYS), st.one_of(hostile_numbers, json_values),
                                                   max_size=4)))
def test_fuzzed_project_views_open(editor, view):
    text = json.dumps(valid_project() | {"view": view})
    try:
        project = Project.from_json(text)
    except ProjectError as exc:
        assert "\n" not in str(exc)
        return
    editor.restore_view(project.view)
    assert editor.grid.horizontalScrollBar().value() >= 0 and editor.grid.verticalScrollBar().value() >= 0


@st.composite
def history_entries(draw) -> dict:
    entry = {k: draw(json_values) for k in draw(st.lists(st.sampled_from(HISTORY_FIELDS), unique=True, max_size=5))}
    if draw(st.booleans()):
        entry["settings"] = {k: draw(st.one_of(hostile_numbers, json_values))
                             for k in draw(st.lists(st.sampled_from(SETTING_KEYS), unique=True, max_size=4))}
    if draw(st.booleans()):
        entry["scores"] = draw(st.lists(st.one_of(json_values, st.dictionaries(st.sampled_from(["CE", "PQ"]),
                                                                                 hostile_numbers)), max_size=3))
    return entry


@pytest.fixture(scope="module")
def studio_history():
    from studio.generate.history import GenerationHistory
    from studio.generate.session import describe_request

    return GenerationHistory, describe_request


@FUZZ
@given(history=st.lists(st.one_of(history_entries(), json_values), max_size=4))
def test_fuzzed_history_entries_show(studio_history, history):
    GenerationHistory, describe_request = studio_history
    project = Project.from_json(json.dumps(valid_project() | {"history": history}))
    typed = GenerationHistory(project)
    assert len(typed.requests) == sum(isinstance(h, dict) for h in history)
    for req in typed.requests:  # what the history list shows of each (GeneratePanel._refresh_history)
        describe_request(req)
        scores = [s for s in req.scores or [] if s]
        if scores:
            f"{max(s.get('CE', 0) for s in scores):.2f}"
        if req.accepted is not None:
            int(req.accepted) + 1
        if (req.model or {}).get("path"):
            str(req.model["path"]).replace("T", " ")
        req.time.replace("T", " ")
    assert project.to_dict()["history"] == json.loads(json.dumps(history))  # the file keeps what it had
