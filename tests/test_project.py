import json
import os

import pytest

from engine.music import Clip, Note, TempoChange, TimeSignature
from engine.project import (
    PROJECT_FORMAT,
    PROJECT_VERSION,
    LoopRegion,
    Project,
    ProjectError,
    load_project,
    save_project,
)


def sample_project() -> Project:
    clip = Clip(
        [Note(0, 60, 240, 90), Note(240, 64, 240, 70), Note(480, 67, 960, 110)],
        480,
        [TempoChange(0, 97.5), TempoChange(1920, 120.0)],
        [TimeSignature(0, 3, 4)],
    )
    return Project(
        clip=clip,
        loop=LoopRegion(0, 1440, enabled=False),
        soundfont="/tmp/some.sf2",
        candidates=[{"id": 1, "notes": [[0, 60, 10, 80]]}],
        history=[{"action": "generate", "seed": 3}],
    )


def test_round_trip_keeps_everything(tmp_path):
    project = sample_project()
    path = tmp_path / "a.smartproj"
    save_project(project, path)
    loaded = load_project(path)
    assert loaded.clip == project.clip
    assert loaded.loop == project.loop
    assert loaded.soundfont == project.soundfont
    assert loaded.candidates == project.candidates
    assert loaded.history == project.history
    data = json.loads(path.read_text())
    assert data["format"] == PROJECT_FORMAT and data["version"] == PROJECT_VERSION


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "a.smartproj"
    save_project(sample_project(), path)
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ProjectError, match="cannot save"):
        save_project(Project(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.smartproj"]  # no temp file left behind


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "invalid JSON"),
        (b'{"format": "smart-studio-project", "version": 1, "clip": {"ppq": 480, "no', "truncated"),
        (b"MThd\x00\x00\x00\x06", "not UTF-8|invalid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'{"format": "something-else", "version": 1}', "wrong 'format'"),
        (b'{"format": "smart-studio-project", "version": 99, "clip": {}}', "newer"),
        (b'{"format": "smart-studio-project", "version": "1", "clip": {}}', "version"),
        (b'{"format": "smart-studio-project", "version": 1}', "no clip"),
        (b'{"format": "smart-studio-project", "version": 1, "clip": {"ppq": 0, "notes": [], "tempos": [], '
         b'"time_signatures": []}}', "PPQ"),
        (b'{"format": "smart-studio-project", "version": 1, "clip": {"ppq": 480, "notes": [[0, 200, 10, 80]], '
         b'"tempos": [[0, 120]], "time_signatures": [[0, 4, 4]]}}', "invalid note"),
        (b'{"format": "smart-studio-project", "version": 1, "clip": {"ppq": 480, "notes": [], '
         b'"tempos": [[0, 120]], "time_signatures": [[0, 4, 4]]}, "loop": {"start": 10, "end": 5}}', "loop"),
    ],
)
def test_bad_files_raise_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.smartproj"
    path.write_bytes(content)
    with pytest.raises(ProjectError, match=message) as info:
        load_project(path)
    assert "\n" not in str(info.value)


def test_too_many_notes_refused(tmp_path):
    notes = [[i * 10, 60 + i % 12, 5, 80] for i in range(100_000)]
    data = {"format": PROJECT_FORMAT, "version": 1,
            "clip": {"ppq": 480, "notes": notes, "tempos": [[0, 120]], "time_signatures": [[0, 4, 4]]}}
    path = tmp_path / "huge.smartproj"
    path.write_text(json.dumps(data))
    with pytest.raises(ProjectError, match="too many notes"):
        load_project(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ProjectError, match="no such file"):
        load_project(tmp_path / "nope.smartproj")
    with pytest.raises(ProjectError, match="folder"):
        load_project(tmp_path)


def test_unknown_fields_are_tolerated_and_defaults_apply():
    data = {"format": PROJECT_FORMAT, "version": 1, "future_field": 1,
            "clip": {"ppq": 96, "notes": [], "tempos": [[0, 100]], "time_signatures": [[0, 6, 8]]}}
    project = Project.from_dict(data)
    assert project.loop is None and project.candidates == [] and project.history == []
    assert project.clip.ppq == 96 and project.clip.time_signature.numerator == 6
