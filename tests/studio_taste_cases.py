"""The musician's taste in the Generate panel: picks become preference pairs (Accept, Compare A/B), the
taste model is fit on them in the background, and candidates then show a taste score, sort by it and
a search can use it as its reward.

The listener here is simulated (it prefers a higher register, with Bradley–Terry noise); its numbers
are not a person's."""

from __future__ import annotations

import json
import math
import random

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox
from conftest import serve
from studio_generate_cases import model_dir  # noqa: F401 - fixture
from test_studio_support import boxes, make_window, window  # noqa: F401 - fixtures

from engine.music import Clip, Note
from engine.preferences import PreferenceSet
from engine.project import Project
from engine.taste import MIN_PAIRS
from studio.generate.candidates import TASTE, TASTE_COLUMN
from studio.generate.history import CONTINUE, READY, Candidate, Request

PPQ = 480
AT = 8 * PPQ  # the continuation point: the end of the 2-bar sketch
SPAN = (AT, 16 * PPQ)


def sketch() -> Clip:
    return Clip([Note(i * PPQ, 60 + (i % 4) * 2, 400, 80) for i in range(8)], ppq=PPQ)


def melody(centre: int, rng: random.Random) -> list[Note]:
    """Two bars of eighth-ish notes around `centre` after the continuation point."""
    return [Note(AT + i * PPQ, max(21, min(108, centre + rng.choice((-3, -1, 0, 2, 4)))), 300, 80)
            for i in range(8)]


def mean_pitch(notes: list[Note]) -> float:
    return sum(n.pitch for n in notes) / len(notes)


def listener_choice(a: list[Note], b: list[Note], rng: random.Random) -> str:
    """Prefers the higher register: P(a ≻ b) = σ((mean pitch a − mean pitch b) / 4)."""
    p = 1 / (1 + math.exp(-(mean_pitch(a) - mean_pitch(b)) / 4))
    return "A" if rng.random() < p else "B"


def show_candidates(panel, centres: list[int], seed: int = 0) -> list[Candidate]:
    """A continue request with one candidate per register centre, shown as if the host had made them."""
    rng = random.Random(seed)
    QApplication.processEvents()  # a project loaded just now is adopted by the panel on the next turn
    req = panel.history.add(Request.new(CONTINUE, {}, at_tick=AT, placement="replace", span_ticks=list(SPAN)))
    for k, c in enumerate(centres):
        panel.history.store(Candidate(index=k, request=req.id, mode=CONTINUE, notes=melody(c, rng), status=READY,
                                      span=SPAN, placement="replace"))
    assert panel.show_request(req.id) == len(centres)
    return list(panel.model.items)


def profile(window) -> PreferenceSet:
    window.taste_store.wait()
    return PreferenceSet(window.taste_store.profile_dir)


def simulate_pairs(prefs: PreferenceSet, n: int, seed: int = 1) -> None:
    """n pairs judged by the simulated listener, written as the studio writes them."""
    rng = random.Random(seed)
    clip = sketch()
    prompt = clip.to_midi_bytes()
    for _ in range(n):
        a, b = melody(rng.randint(48, 84), rng), melody(rng.randint(48, 84), rng)
        prefs.record(a_midi=clip.with_notes(a).to_midi_bytes(), b_midi=clip.with_notes(b).to_midi_bytes(),
                     prompt_midi=prompt, choice=listener_choice(a, b, rng), source="ab")


def test_accept_over_three_others_writes_three_pairs_and_discard_alone_none(window, qtbot, tmp_path):
    panel = window.generate_panel
    window.load_project(Project(clip=sketch()), None)
    window.project_path = tmp_path / "song.smart"
    panel.taste_section.chk_project.setChecked(True)  # also keep the picks with this project
    items = show_candidates(panel, [55, 62, 70, 77])
    panel.discard(items[3])  # turned down on its own: no pair yet
    assert len(profile(window)) == 0
    panel.select_item(items[1])
    qtbot.mouseClick(panel.btn_accept, Qt.LeftButton)
    recs = profile(window).records()
    # #2 over the two still shown and over #4, discarded before for the same prompt.
    assert len(recs) == 3 and {r["source"] for r in recs} == {"accept"} and {r["choice"] for r in recs} == {"A"}
    assert sorted(r["b"]["label"] for r in recs) == ["#1", "#3", "#4"] and {r["a"]["label"] for r in recs} == {"#2"}
    pair = profile(window).pairs()[0]
    accepted, _ = Clip.from_midi(pair.chosen, mode="user")
    assert sorted(n.pitch for n in accepted.notes) == sorted(n.pitch for n in items[1].notes)
    assert all(n.start >= AT for n in accepted.notes)  # at their ticks after the prompt
    prompt, _ = Clip.from_midi(pair.prompt, mode="user")
    assert sorted(n.pitch for n in prompt.notes) == sorted(n.pitch for n in sketch().notes)
    project_set = PreferenceSet(tmp_path / "song.preferences")
    assert len(project_set) == 3 and len(project_set.pairs()) == 3


def test_accept_with_four_candidates_writes_three_pairs(window, qtbot):
    panel = window.generate_panel
    window.load_project(Project(clip=sketch()), None)
    items = show_candidates(panel, [50, 60, 70, 80])
    assert panel.accept(items[2])
    assert len(profile(window).records()) == 3
    assert not (window.taste_store.profile_dir.parent / "song.preferences").exists()  # not ticked, not saved


def test_compare_a_b_writes_one_pair_and_keeps_ties(window, qtbot):
    panel = window.generate_panel
    window.load_project(Project(clip=sketch()), None)
    items = show_candidates(panel, [50, 60, 70])
    assert not panel.btn_prefer_a.isEnabled()
    panel.select_item(items[0])
    panel.select_item(items[2])
    assert panel.btn_prefer_b.isEnabled() and panel.compare_label.text() == "A = #1, B = #3:"
    qtbot.mouseClick(panel.btn_prefer_b, Qt.LeftButton)
    recs = profile(window).records()
    assert len(recs) == 1 and recs[0]["source"] == "ab" and recs[0]["choice"] == "B"
    assert (recs[0]["a"]["label"], recs[0]["b"]["label"]) == ("#1", "#3")
    qtbot.mouseClick(panel.btn_prefer_tie, Qt.LeftButton)
    recs = profile(window).records()
    assert len(recs) == 2 and recs[1]["choice"] == "tie" and recs[1]["preferred"] is None
    assert len(panel.model.items) == 3  # comparing keeps every candidate on screen


def test_picks_until_ready_then_fit_scores_and_sorts_by_taste(window, qtbot, tmp_path, boxes):
    panel = window.generate_panel
    store = window.taste_store
    window.load_project(Project(clip=sketch()), None)
    rng = random.Random(5)
    # Fewer decisive picks than the model needs: no scores, and the section says how many more.
    for k in range(3):
        items = show_candidates(panel, [rng.randint(48, 84), rng.randint(48, 84)], seed=k)
        panel.select_item(items[0])
        panel.select_item(items[1])
        panel.compare(listener_choice(items[0].notes, items[1].notes, rng))
    store.wait()
    panel.taste_section.refresh()
    assert f"needs {MIN_PAIRS - 3} more decisive picks" in panel.taste_section.label.text()
    assert not store.ready and panel.model.taste == {}
    # The rest of 40 picks by the simulated listener, then Fit (on the worker thread).
    simulate_pairs(PreferenceSet(store.profile_dir), 37, seed=2)
    items = show_candidates(panel, [50, 58, 66, 74, 82], seed=9)
    panel.taste_section.refresh()
    qtbot.mouseClick(panel.taste_section.btn_fit, Qt.LeftButton)
    qtbot.waitUntil(lambda: store.ready and not store.fitting, timeout=60000)
    qtbot.waitUntil(lambda: len(panel.model.taste) == 5, timeout=10000)
    report = store.model.report
    assert report["pairs"] == 40 and report["decisive"] == 40
    text = panel.taste_section.label.text()
    assert "40 picks collected" in text and "held-out picks" in text and "95 %" in text, text
    print("taste cv:", json.dumps(report["cv"]))
    # Every candidate shows a taste score with its ±; best-of-N by taste puts the highest register first.
    for row in range(5):
        shown = panel.proxy.index(row, TASTE_COLUMN).data()
        assert "±" in shown, shown
    panel.combo_sort.setCurrentText(TASTE)
    first = panel.model.items[panel.proxy.mapToSource(panel.proxy.index(0, 0)).row()]
    assert first is items[-1], [panel.model.taste[i.uid] for i in items]
    assert panel.combo_reward.findData("taste") >= 0  # the search may now use the taste
    panel.select_item(items[0])
    panel.select_item(items[-1])  # two picked: Compare A/B is ready
    panel.table.setMinimumHeight(170)
    panel.tabs.setCurrentIndex(0)
    window.resize(1366, 900)
    qtbot.wait(50)
    shot = tmp_path / "taste-panel.png"
    assert panel.grab().save(str(shot))
    import shutil

    shutil.copy(shot, "/tmp/smart-taste-panel.png")
    # Reset forgets the picks and the model (after asking).
    boxes.answer = QMessageBox.Yes
    qtbot.mouseClick(panel.taste_section.btn_reset, Qt.LeftButton)
    assert not store.ready and len(profile(window)) == 0 and panel.model.taste == {}
    assert panel.combo_reward.findData("taste") < 0
    panel.options.search_reward = "taste"  # e.g. saved in the settings before the reset
    panel.search()
    assert not panel.generating and "needs 10 more decisive picks" in panel.job_label.text(), panel.job_label.text()


def test_reset_is_not_done_without_a_yes(window, boxes):
    store = window.taste_store
    simulate_pairs(PreferenceSet(store.profile_dir), 2)
    boxes.answer = 0  # anything but Yes
    assert not window.generate_panel.taste_section.reset()
    assert len(profile(window)) == 2 and boxes.questions


def test_export_zips_the_profile(window, tmp_path):
    store = window.taste_store
    simulate_pairs(PreferenceSet(store.profile_dir), 3)
    import zipfile

    store.export(tmp_path / "mine.zip").result(30)
    names = zipfile.ZipFile(tmp_path / "mine.zip").namelist()
    assert "preferences.jsonl" in names and sum(n.endswith("-a.mid") for n in names) == 3


@pytest.fixture(scope="module")
def tiny_host(model_dir):  # noqa: F811 - the fixture imported above
    from engine.host.server import create_app
    from engine.policy import Policy

    from engine.scorer import MAAScorer, build_maa_model

    scorer = MAAScorer(build_maa_model(small=True), device="cpu", is_random=True, source="random (test)")
    app = create_app(Policy.load(model_dir), scorer=scorer, token="taste-token-1")
    with serve(app) as url:
        yield url, "taste-token-1"


def run_search(qtbot, panel, reward: str, bars: int) -> dict:
    """One reward-guided search from the end of the selection (2 beams, 2 tries each); its history entry."""
    panel.spin_bars.setValue(bars)
    panel.spin_beams.setValue(2)
    panel.spin_expand.setValue(2)
    panel.spin_budget.setValue(60)
    panel.spin_seed.setValue(4)
    panel.combo_reward.setCurrentIndex(panel.combo_reward.findData(reward))
    assert panel.options.search_reward == reward
    qtbot.mouseClick(panel.btn_search, Qt.LeftButton)
    qtbot.waitUntil(lambda: not panel.generating, timeout=120000)
    hist = panel.win.project_extras.history[-1]
    assert hist["mode"] == "search" and hist["status"] == "completed", panel.job_label.text()
    assert hist["reward"] == reward and hist["steps"] == bars
    return hist


@pytest.mark.slow  # a whole generation through the local host; CI runs it (pytest -m slow)
def test_search_by_taste_and_by_taste_mixed_with_maa(window, qtbot, tiny_host):
    from studio.host.connection import REMOTE

    store = window.taste_store
    simulate_pairs(PreferenceSet(store.profile_dir), 30, seed=3)
    store.fit().result(60)
    qtbot.waitUntil(lambda: store.ready, timeout=10000)
    panel = window.generate_panel
    panel._fill_rewards()
    assert panel.combo_reward.findData("taste") >= 0
    assert panel.combo_reward.findData("taste+CE") < 0  # the mix needs MAA: not before a host can score
    panel.set_host(REMOTE, url=tiny_host[0], token=tiny_host[1])
    qtbot.waitUntil(lambda: panel.host.state in ("connected", "failed"), timeout=30000)
    assert panel.host.connected, panel.host.error
    assert panel.combo_reward.findData("taste+CE") >= 0  # random-weight MAA here: offered, labelled
    window.load_project(Project(clip=sketch()), None)
    window.document.select_all()
    run_search(qtbot, panel, "taste", bars=2)
    items = [i for i in panel.model.items if i.notes]
    assert items
    # The reward each beam was kept for is the taste score the table shows for it.
    for item in items:
        assert item.reward == pytest.approx(panel.model.taste[item.uid][0], abs=1e-6)

    # Half taste, half MAA CE: both standardized over each step's beams, so the reward is a z-score mix.
    run_search(qtbot, panel, "taste+CE", bars=1)
    items = [i for i in panel.model.items if i.notes]
    assert items and all(i.scores and "CE" in i.scores and i.uid in panel.model.taste for i in items)
    rewards = [i.reward for i in items]
    assert rewards == sorted(rewards, reverse=True) and all(-3 < r < 3 for r in rewards)
    assert any(abs(i.reward - panel.model.taste[i.uid][0]) > 1e-3 for i in items)  # not the taste alone


def test_blind_ab_picks_reach_the_profile_too(window, tmp_path):
    import base64

    window.project_path = tmp_path / "song.smart"
    clip = sketch()
    rng = random.Random(0)

    def continuation(centre: int) -> dict:
        notes = melody(centre, rng)
        return {"notes": notes, "midi": base64.b64encode(clip.with_notes(notes).to_midi_bytes()).decode("ascii")}

    ab = window.train_panel.ab
    ab.set_pairs([{"prompt": clip.to_midi_bytes(), "base": continuation(55), "tuned": continuation(75)}],
                 "base-model", "tuned-model", "job-1")
    rec = ab.choose("tie")
    assert rec["source"] == "blind-ab" and rec["choice"] == "tie"
    assert len(PreferenceSet(tmp_path / "song.preferences")) == 1  # where the blind A/B keeps its tally
    recs = profile(window).records()
    assert len(recs) == 1 and recs[0]["source"] == "blind-ab" and recs[0]["job"] == "job-1"
    assert {recs[0]["a"]["role"], recs[0]["b"]["role"]} == {"base", "tuned"}
    assert PreferenceSet(window.taste_store.profile_dir).tally() == {"base-model → tuned-model": {
        "tuned": 0, "base": 0, "tie": 1}}
