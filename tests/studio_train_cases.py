"""The Train panel (studio/train) against a real host on 127.0.0.1 with a tiny random-weight policy and the
offline `notes` reward: prompts from the selection → job → live plots → cancel → resume → pause →
checkpoint activated and generating → blind A/B choice saved to the preference folder."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from test_studio_support import boxes, make_window, window  # noqa: F401 - fixtures

from engine.api import HealthReply
from engine.host_client import LocalHost
from engine.music import Clip, Note
from studio.host.connection import REMOTE

PPQ = 480
SHOTS = Path(os.environ.get("SMART_TEST_SHOTS", "/tmp/smart-train-shots"))


def sketch_clip(bars: int = 4) -> Clip:
    pitches = [60, 64, 67, 72, 62, 65, 69, 74]
    return Clip([Note(i * PPQ, pitches[i % 8], 400, 80) for i in range(4 * bars)], ppq=PPQ)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from engine.policy import Policy

    root = tmp_path_factory.mktemp("train-panel")
    Policy.create("tiny", seed=0).save(root / "tiny")
    h = LocalHost(root / "tiny", extra_args=["--jobs-dir", str(root / "jobs"), "--threads", "1"]).start()
    yield h
    h.stop()


def connect(qtbot, win, host):
    gen = win.generate_panel
    gen.set_host(REMOTE, url=host.url, token=host.token)
    qtbot.waitUntil(lambda: gen.host.state in ("connected", "failed"), timeout=30000)
    assert gen.host.connected, gen.host.error
    panel = win.train_panel
    assert panel.host is gen.host  # one connection per studio
    panel.raise_()  # its tab (it shares the dock area with Generate)
    qtbot.waitUntil(panel.btn_start.isVisible, timeout=5000)
    return panel


def shot(widget, name: str) -> Path:
    """Save a screenshot (a dock panel: its whole scrolled content)."""
    from PySide6.QtWidgets import QDockWidget, QScrollArea

    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    if isinstance(widget, QDockWidget) and isinstance(widget.widget(), QScrollArea):
        widget = widget.widget().widget()
    assert widget.grab().save(str(path))
    return path


def test_panel_presets_are_the_papers(window):
    from studio.train.presets import local_catalogue, preset_values
    from training.grpo import GRPORunConfig

    defaults = {f.name: f.default for f in fields(GRPORunConfig)}
    panel = window.train_panel
    paper = preset_values(panel.catalogue, "paper")  # what the panel offers (the host's catalogue once connected)
    assert paper == preset_values(local_catalogue(), "paper")
    assert set(paper) >= {"steps", "prompts_per_step", "group", "max_completion_tokens", "reward", "beta", "lr"}
    assert all(defaults[k] == v for k, v in paper.items()), {k: (defaults[k], v) for k, v in paper.items()}
    panel.apply_preset("paper")
    assert panel.options()["steps"] == defaults["steps"] and panel.options()["reward"] == defaults["reward"]


def test_prompt_from_selection_takes_whole_bars():
    from studio.train.prompts import prompt_from_notes

    clip = sketch_clip(4)
    sel = [n for n in clip.notes if PPQ * 5 <= n.start < PPQ * 9]  # bar 2 (beats 5–8) and bar 3's first beat
    p = prompt_from_notes(clip, sel, "x")
    assert p.bars == 2 and p.source["bars"] == [1, 3]
    assert [n.start for n in p.clip.notes] == [PPQ * 1, PPQ * 2, PPQ * 3, PPQ * 4]  # only the selected notes
    assert p.describe() == "x — 2 bars, 4 notes"


def test_preference_set_records_and_tallies(tmp_path):
    from studio.train.preferences import PreferenceSet, preference_dir

    d = preference_dir(tmp_path / "song.smart", tmp_path / "fallback")
    assert d == tmp_path / "song.preferences"
    prefs = PreferenceSet(d)
    base, tuned = {"role": "base", "path": "/m/base"}, {"role": "tuned", "path": "/m/ckpt"}
    r1 = prefs.record(a_midi=b"A1", b_midi=b"B1", prompt_midi=b"P", a_model=tuned, b_model=base, choice="A")
    r2 = prefs.record(a_midi=b"A2", b_midi=b"B2", prompt_midi=None, a_model=base, b_model=tuned, choice="A")
    prefs.record(a_midi=b"A3", b_midi=b"B3", prompt_midi=None, a_model=base, b_model=tuned, choice="tie")
    assert (r1["preferred"], r2["preferred"]) == ("tuned", "base")
    assert prefs.tally() == {"/m/base → /m/ckpt": {"tuned": 1, "base": 1, "tie": 1}}
    assert (d / r1["a"]["midi"]).read_bytes() == b"A1" and (d / r1["prompt"]).read_bytes() == b"P"
    assert json.loads((d / "tally.json").read_text()) == prefs.tally()
    with pytest.raises(ValueError):
        prefs.record(a_midi=b"", b_midi=b"", prompt_midi=None, a_model=base, b_model=tuned, choice="C")


def test_offline_rewards_are_labelled_and_maa_missing_offers_download(window, qtbot):
    panel = window.train_panel
    assert panel.host.maa_status() == "unknown"
    panel.reward_combo.setCurrentIndex(panel.reward_combo.findData("notes"))
    assert "offline, no MAA" in panel.reward_combo.currentText()
    assert "Offline reward, no MAA" in panel.maa_label.text()
    assert "offline, no MAA" in panel.plots.caption.text()
    panel.host.health = HealthReply(maa={"status": "missing", "reason": "not installed"})  # a host without MAA
    panel.reward_combo.setCurrentIndex(panel.reward_combo.findData("maa-ce"))
    assert panel.btn_download.isVisibleTo(panel) and "not installed" in panel.maa_label.text()
    panel.start()  # refused before anything reaches the host
    assert "MAA weights are not installed" in panel.job_label.text()
    panel.host.health = None


@pytest.mark.slow  # a real training job through cancel, resume, pause, a checkpoint and an A/B trial
def test_train_flow(window, qtbot, host, tmp_path):
    panel = connect(qtbot, window, host)
    client = panel.host.client
    # The presets and rewards shown are those the host offers (GET /v1/train/options).
    qtbot.waitUntil(lambda: "maa_reason" in panel.catalogue, timeout=30000)
    assert [panel.preset_combo.itemData(i) for i in range(panel.preset_combo.count())] == \
        list(client.train_options()["presets"])
    window.resize(1500, 1000)
    panel.setMinimumWidth(560)
    window.project_path = tmp_path / "song.smart"  # preferences go next to the project
    window.document.load(sketch_clip(4))
    window.document.set_selection([n for n in window.document.clip.notes if n.start < PPQ * 8])
    qtbot.mouseClick(panel.btn_add_selection, Qt.LeftButton)
    assert panel.prompt_list.count() == 1 and "2 bars, 8 notes" in panel.prompt_list.item(0).text()

    panel.reward_combo.setCurrentIndex(panel.reward_combo.findData("notes"))
    panel.spin_steps.setValue(300)
    panel.spin_prompts.setValue(1)
    panel.spin_group.setValue(2)
    panel.spin_tokens.setValue(32)
    panel.spin_save.setValue(2)
    assert "1 prompts × 2 continuations = 2 completions" in panel.counts_label.text()
    opts = panel.options()
    assert opts["reward"] == "notes" and opts["beta"] == 0.04 and opts["lr"] == pytest.approx(1e-4)
    qtbot.mouseClick(panel.btn_start, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.job_id is not None, timeout=30000)
    job_id = panel.job_id
    qtbot.waitUntil(lambda: panel.plots.points("reward_mean") >= 3, timeout=180000)
    assert panel.plots.points("kl") >= 3 and panel.plots.points("diversity") >= 3
    assert panel.plots.points("drift") >= 3 and panel.plots.points("drift_threshold") >= 3  # the drift guard
    assert panel.plots.points("completion_tokens") >= 3
    assert panel.job_state == "running"
    qtbot.waitUntil(lambda: "ETA" in panel.job_label.text() and panel.progress.value() > 0, timeout=10000)
    print("screenshot:", shot(panel, "train-panel-running.png"), shot(window, "train-window-running.png"))
    info = client.job(job_id)
    assert info["prompts"]["midi"] == 1 and info["config"]["save_every"] == 2

    # Cancel, then resume: the job continues from its last checkpoint and the plot follows it again.
    qtbot.mouseClick(panel.btn_cancel, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.job_state == "cancelled", timeout=60000)
    assert panel.btn_resume.isEnabled() and not panel.btn_pause.isEnabled()
    before = len(panel.records)
    qtbot.mouseClick(panel.btn_resume, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.job_state == "running" and len(panel.records) > before, timeout=180000)
    # Pause: stops at a step boundary with a checkpoint.
    qtbot.mouseClick(panel.btn_pause, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.job_state == "paused", timeout=120000)
    qtbot.waitUntil(lambda: panel.ckpt_table.rowCount() >= 3 and panel.ckpt_table.item(
        panel.ckpt_table.rowCount() - 1, 0).text() == "final", timeout=20000)  # checkpoints + the final model
    steps = [r["step"] for r in panel.records]
    assert steps == list(range(1, len(steps) + 1))
    assert client.job(job_id)["attempts"] == 2
    print("screenshot:", shot(panel, "train-panel-paused.png"))

    # Use the checkpoint: the host generates with it.
    panel.ckpt_table.selectRow(0)
    ckpt = panel.selected_checkpoint()
    assert "checkpoint-" in ckpt
    qtbot.mouseClick(panel.btn_use, Qt.LeftButton)
    qtbot.waitUntil(lambda: (panel.host.health or {}).get("model", {}).get("path") == ckpt, timeout=60000)
    done = client.generate(sketch_clip(2).to_midi_bytes(), candidates=1, bars=1, max_new_tokens=24, seed=3,
                           score=False).wait()
    assert done["model"]["path"] == ckpt

    # Blind A/B: base vs the checkpoint on the picked prompt; the choice lands in the preference folder.
    ab = panel.ab
    qtbot.mouseClick(panel.btn_compare, Qt.LeftButton)
    qtbot.waitUntil(lambda: len(ab.trials) == 1, timeout=120000)
    assert client.health()["model"]["path"] == ckpt  # the active model is put back after the comparison
    trial = ab.trials[0]
    assert sorted(trial["roles"].values()) == ["base", "tuned"]
    assert "base" not in ab.label.text() and "tuned" not in ab.label.text()  # blind
    qtbot.mouseClick(ab.btn_play_a, Qt.LeftButton)
    if trial["A"]["notes"]:
        assert panel.audition.active and panel.audition.clip.notes
    panel.audition.stop()
    print("screenshot:", shot(panel, "train-panel-ab.png"))
    qtbot.mouseClick(ab.btn_pick_b, Qt.LeftButton)
    prefs = tmp_path / "song.preferences"
    lines = [json.loads(x) for x in (prefs / "preferences.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["choice"] == "B" and lines[0]["preferred"] == trial["roles"]["B"]
    assert lines[0]["job"] == job_id
    for key in ("a", "b"):
        assert (prefs / lines[0][key]["midi"]).stat().st_size > 0
    assert (prefs / lines[0]["prompt"]).exists()
    assert "Done: 1 pair" in ab.label.text() and "preferred" in ab.tally_label.text()
    assert not ab.btn_pick_a.isEnabled()
