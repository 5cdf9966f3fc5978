"""engine.preferences: the one store of a musician's judged pairs (studio writes, taste learning reads)."""

from __future__ import annotations

import json
import zipfile

import pytest

from engine.preferences import (FILE, PreferenceSet, normalize_choice, preference_dir, read_pairs,
                                user_preference_dir)

BASE, TUNED = {"role": "base", "path": "/m/base"}, {"role": "tuned", "path": "/m/ckpt"}


def test_dirs_profile_and_project(tmp_path, monkeypatch):
    monkeypatch.setenv("SMART_PREFERENCES_DIR", str(tmp_path / "profile"))
    assert user_preference_dir() == tmp_path / "profile"
    monkeypatch.delenv("SMART_PREFERENCES_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert user_preference_dir() == tmp_path / "data" / "smart-studio" / "preferences"
    assert preference_dir(tmp_path / "song.smart") == tmp_path / "song.preferences"
    assert preference_dir(None) == user_preference_dir()
    assert preference_dir(None, tmp_path / "fb") == tmp_path / "fb"


def test_record_pairs_ties_and_choices(tmp_path):
    prefs = PreferenceSet(tmp_path / "p")
    r1 = prefs.record(a_midi=b"A1", b_midi=b"B1", prompt_midi=b"P", choice="a", a_model=TUNED, b_model=BASE,
                      source="blind-ab")
    r2 = prefs.record(a_midi=b"A2", b_midi=b"B2", prompt_midi=None, choice="B", source="accept")
    r3 = prefs.record(a_midi=b"A3", b_midi=b"B3", prompt_midi=None, choice="tie", a_model=BASE, b_model=TUNED)
    assert (r1["choice"], r2["choice"], r3["choice"]) == ("A", "B", "tie")
    assert r1["preferred"] == "tuned" and r3["preferred"] is None
    pairs = prefs.pairs()
    assert [p.choice for p in pairs] == ["A", "B", "tie"]
    assert pairs[0].chosen.read_bytes() == b"A1" and pairs[0].rejected.read_bytes() == b"B1"
    assert pairs[0].prompt.read_bytes() == b"P" and pairs[1].prompt is None
    assert pairs[1].chosen.read_bytes() == b"B2"
    assert pairs[2].chosen is None and pairs[2].rejected is None  # a tie stays a tie
    # Only base-vs-tuned judgements are tallied; the accept pair has no roles.
    assert prefs.tally() == {"/m/base → /m/ckpt": {"tuned": 1, "base": 0, "tie": 1}}
    assert json.loads((prefs.dir / "tally.json").read_text()) == prefs.tally()
    s = prefs.summary()
    assert (s["pairs"], s["decisive"], s["ties"]) == (3, 2, 1)
    assert s["by_source"] == {"blind-ab": 1, "accept": 1, "unknown": 1}
    with pytest.raises(ValueError):
        prefs.record(a_midi=b"", b_midi=b"", prompt_midi=None, choice="C")
    with pytest.raises(ValueError):
        normalize_choice("left")


def test_torn_lines_and_missing_files_are_skipped(tmp_path):
    prefs = PreferenceSet(tmp_path)
    prefs.record(a_midi=b"A", b_midi=b"B", prompt_midi=None, choice="A")
    prefs.record(a_midi=b"A", b_midi=b"B", prompt_midi=None, choice="B")
    (tmp_path / "pairs" / "000002-b.mid").unlink()
    with open(tmp_path / FILE, "a") as f:
        f.write('{"id": "torn", "cho')
    assert len(prefs.records()) == 2
    assert [p.id for p in prefs.pairs()] == ["000001"]


def test_read_pairs_export_and_reset(tmp_path):
    a, b = PreferenceSet(tmp_path / "profile"), PreferenceSet(tmp_path / "song.preferences")
    a.record(a_midi=b"1", b_midi=b"2", prompt_midi=b"p", choice="A")
    b.record(a_midi=b"3", b_midi=b"4", prompt_midi=None, choice="tie")
    assert [p.choice for p in read_pairs([a.dir, b.dir])] == ["A", "tie"]
    with pytest.raises(FileNotFoundError):
        read_pairs([tmp_path / "nothing"])
    archive = a.export(tmp_path / "out" / "mine.zip")
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["pairs/000001-a.mid", "pairs/000001-b.mid", "pairs/000001-prompt.mid",
                                        "preferences.jsonl", "tally.json"]
    assert a.reset() == 1
    assert a.records() == [] and a.pairs() == [] and not (a.dir / "pairs").exists()
    # Numbering restarts, and the set works again after a reset.
    assert a.record(a_midi=b"5", b_midi=b"6", prompt_midi=None, choice="B")["id"] == "000001"


def test_studio_module_is_the_engine_store():
    import engine.preferences
    import studio.train.preferences as studio_prefs

    assert studio_prefs.PreferenceSet is engine.preferences.PreferenceSet
    assert studio_prefs.preference_dir is engine.preferences.preference_dir
