"""`smart eval`: the paper's analyses (MAA distributions, MIDI features, piano rolls, diversity)."""

from __future__ import annotations

import json

import pytest
import torch

from engine.cli import main as smart_main
from engine.policy import Policy
from test_grpo import note_model_dir
from training.evaluate import EvalConfig, parse_models, run_eval


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("random_model") / "model"
    Policy.create("tiny", seed=1).save(base)  # random init: writes (almost) no notes
    return {"random": base, "notes": note_model_dir(tmp_path_factory)}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_eval_report_with_random_maa(models, tmp_path):
    cfg = EvalConfig(models=[("random", str(models["random"])), ("notes", str(models["notes"]))],
                     out_dir=str(tmp_path / "report"), n=12, max_tokens=96, maa_random=True, render_processes=1,
                     seconds=5.0, samples=2)
    report = run_eval(cfg, log=lambda *_: None)
    out = tmp_path / "report"
    for name in ("report.json", "report.md", "maa_distributions.png", "midi_features.png", "piano_rolls.png",
                 "diversity.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "report.json").read_text())
    assert saved["maa"]["random_weights"] is True and "RANDOM-WEIGHT" in saved["maa"]["note"]
    assert "RANDOM-WEIGHT" in (out / "report.md").read_text()
    r, n = saved["models"]["random"], saved["models"]["notes"]
    assert r["n"] == n["n"] == 12
    for axis in ("CE", "CU", "PC", "PQ"):
        assert 1.0 <= n["maa"][axis]["mean"] <= 10.0
    assert set(n["features"]) == {"n_notes", "polyphony_rate", "empty_beat_rate", "pitch_range",
                                  "scale_consistency", "velocity_range"}
    # The pretrained model writes notes; the random one barely does — the report must show it.
    assert n["features"]["n_notes"]["mean"] > 5 > r["features"]["n_notes"]["mean"]
    assert n["silent_fraction"] < r["silent_fraction"]
    assert n["diversity"]["pairwise_distance"] > 0.5
    assert sum(n["pitch_counts"]) == pytest.approx(n["features"]["n_notes"]["mean"] * 12)
    assert len(list((out / "samples" / "notes").glob("*.mid"))) == 2
    assert report["figures"]["piano_rolls"] == "piano_rolls.png"


def test_eval_cli_skips_maa_without_weights(models, tmp_path, capsys):
    code = smart_main(["eval", "--model", f"notes={models['notes']}", "--n", "4", "--max-tokens", "48",
                       "--maa", str(tmp_path / "no_such_maa.pt"), "--out", str(tmp_path / "r")])
    assert code == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["maa"]["available"] is False and "skipped" in report["maa"]["note"]
    assert not (tmp_path / "r" / "maa_distributions.png").exists()
    assert (tmp_path / "r" / "midi_features.png").exists()
    assert "skipped" in capsys.readouterr().out


def test_parse_models_and_errors(tmp_path):
    assert parse_models(["a=x/y", "runs/final"]) == [("a", "x/y"), ("final", "runs/final")]
    assert smart_main(["eval", "--model", f"x={tmp_path / 'missing'}", "--n", "2", "--out", str(tmp_path / "o"),
                       "--no-maa"]) == 2
