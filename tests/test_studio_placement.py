"""Where a continuation goes (studio.generate.placement, no Qt): insert, replace, empty space only."""

import pytest

from engine.music import Clip, Note, TempoChange, TimeSignature
from studio.generate.history import Candidate, GenerationHistory, Request
from studio.generate.placement import (
    EMPTY,
    INSERT,
    REPLACE,
    PlacementConflict,
    continuation_span,
    place,
    place_candidate,
    prompt_notes,
)

PPQ = 480
BAR = 4 * PPQ


def song(bars: int = 4, sig=(4, 4)) -> Clip:
    per_bar = sig[0] * 4 // sig[1]
    beat = PPQ * 4 // sig[1]
    notes = [Note(i * beat, 60 + i % 7, beat - 40, 80) for i in range(per_bar * bars)]
    return Clip(notes, PPQ, time_signatures=[TimeSignature(0, *sig)])


def test_continuation_span_goes_to_the_next_bar_line_then_whole_bars():
    clip = song()
    assert continuation_span(clip, BAR, 2) == (BAR, 3 * BAR)  # on a bar line: 2 bars
    assert continuation_span(clip, BAR + 100, 2) == (BAR + 100, 4 * BAR)  # mid-bar: the rest of bar 2, then 2
    waltz = song(sig=(3, 4))
    assert continuation_span(waltz, 3 * PPQ, 1) == (3 * PPQ, 6 * PPQ)


def test_insert_moves_later_music_back_by_whole_bars_past_the_continuation():
    clip = song(4)
    span = continuation_span(clip, BAR + 100, 1)  # mid bar 2: rest of bar 2 + bar 3
    new = [Note(BAR + 200, 72, 200, 90), Note(2 * BAR + 10, 74, 300, 90)]
    placed = place(clip, new, span, INSERT)
    later = [n for n in clip.notes if n.start >= BAR + 100]
    assert placed.room == 2 * BAR and placed.shifted == len(later)
    assert [n for n in placed.clip.notes if n.start < BAR + 100] == [n for n in clip.notes if n.start < BAR + 100] \
        + [n for n in new if n.start < BAR + 100]
    moved = [n for n in placed.clip.notes if n not in new and n.start >= BAR + 100]
    assert moved == [Note(n.start + 2 * BAR, n.pitch, n.duration, n.velocity) for n in later]
    assert min(n.start for n in moved) >= span[1]  # nothing overlaps the continuation
    assert len(placed.clip.notes) == len(clip.notes) + len(new)


def test_insert_moves_tempo_and_meter_changes_with_the_music():
    clip = song(4)
    clip = Clip(clip.notes, PPQ, [TempoChange(0, 120), TempoChange(2 * BAR, 90)],
                [TimeSignature(0, 4, 4), TimeSignature(3 * BAR, 3, 4)])
    placed = place(clip, [Note(BAR, 70, 100, 80)], (BAR, 2 * BAR), INSERT)
    assert placed.clip.tempos == [TempoChange(0, 120), TempoChange(3 * BAR, 90)]
    assert placed.clip.time_signatures == [TimeSignature(0, 4, 4), TimeSignature(4 * BAR, 3, 4)]


def test_replace_overwrites_only_the_span_and_empty_refuses_music():
    clip = song(4)
    new = [Note(BAR, 50, 100, 80), Note(BAR + PPQ, 52, 100, 80)]
    placed = place(clip, new, (BAR, 2 * BAR), REPLACE)
    assert placed.replaced == 4
    assert sorted(n for n in placed.clip.notes if BAR <= n.start < 2 * BAR) == new
    assert [n for n in placed.clip.notes if not BAR <= n.start < 2 * BAR] == \
        [n for n in clip.notes if not BAR <= n.start < 2 * BAR]
    with pytest.raises(PlacementConflict, match="bar 2 already holds music"):
        place(clip, new, (BAR, 2 * BAR), EMPTY)
    after = [Note(4 * BAR, 50, 100, 80)]
    assert place(clip, after, (4 * BAR, 5 * BAR), EMPTY).clip.notes == clip.notes + after


def test_prompt_is_the_music_before_the_point():
    clip = song(2)
    assert prompt_notes(clip, BAR) == [n for n in clip.notes if n.start < BAR]
    assert prompt_notes(clip, 0) == []


def test_history_is_typed_and_written_through_to_the_project():
    from engine.project import Project

    project = Project()
    history = GenerationHistory(project)
    req = history.add(Request.new("continue", {"candidates": 2}, at_tick=BAR, placement=INSERT))
    cand = Candidate(index=0, request=req.id, mode="continue", notes=[Note(BAR, 60, 100, 80)], span=(BAR, 2 * BAR),
                     placement=INSERT, status="ready")
    history.store(cand)
    req.status, req.accepted = "completed", 0
    history.save(req)
    assert project.history[-1]["status"] == "completed" and project.history[-1]["accepted"] == 0
    assert project.candidates[-1]["placement"] == INSERT and project.candidates[-1]["span"] == [BAR, 2 * BAR]
    cand.status = "accepted"
    history.store(cand)  # the same entry, updated
    assert len(project.candidates) == 1 and project.candidates[0]["status"] == "accepted"
    reopened = GenerationHistory(project)
    assert reopened.latest.id == req.id and reopened.latest.at_tick == BAR
    assert reopened.open_candidates(req.id) == []  # accepted: no longer open
    # A candidate saved before placements existed merges as it always did.
    old = Candidate.from_dict({"request": "x", "index": 0, "mode": "continue", "notes": [[0, 90, 100, 80]]})
    assert place_candidate(song(1), old).clip.notes == sorted(song(1).notes + old.notes)
