"""eval-continuation: key estimation, per-passage metrics, baselines, the report; `nll` per dataset."""

import json
import math

import pytest
import torch

from engine.api import parse_temperature_factors
from engine.cli import main as smart_main
from engine.music import Clip, Note, TempoChange, TimeSignature
from engine.policy import Policy
from engine.tokenizer import RemiTokenizer
from test_data import arpeggio_piece
from training import continuation_bench as cb
from training import nll as nll_mod
from training.data import prepare

torch.set_num_threads(1)

C_MAJOR_SCALE = (60, 62, 64, 65, 67, 69, 71, 72)


def clip_of(pitches, step=480, velocity=80) -> Clip:
    return Clip([Note(i * step, p, step, velocity) for i, p in enumerate(pitches)], 480,
                [TempoChange(0, 120.0)], [TimeSignature(0, 4, 4)])


def test_krumhansl_schmuckler_finds_major_and_minor_keys():
    assert cb.estimate_key(clip_of(C_MAJOR_SCALE * 2).notes) == (0, "major")
    # A minor: tonic and fifth weighted, with G# as leading tone.
    a_minor = [57, 59, 60, 62, 64, 65, 68, 69, 69, 64, 60, 57]
    assert cb.estimate_key(clip_of(a_minor).notes) == (9, "minor")
    assert cb.estimate_key(clip_of([p + 2 for p in C_MAJOR_SCALE]).notes) == (2, "major")
    assert cb.key_name((9, "minor")) == "A minor"


def test_in_key_share_counts_scale_notes():
    notes = clip_of([60, 62, 61, 66]).notes  # C, D in C major; C#, F# are not
    assert cb.in_key_share(notes, (0, "major")) == 0.5
    assert cb.in_key_share(clip_of([68]).notes, (9, "minor")) == 1.0  # G# leads to A
    assert cb.in_key_share([], (0, "major")) == 0.0


def test_compare_against_truth():
    truth = clip_of(C_MAJOR_SCALE + C_MAJOR_SCALE[::-1], step=240)  # 16 eighths: 2 different bars of 4/4
    bars = [0, 1920, 3840]
    same = cb.compare(truth, truth, (0, "major"), bars, [])
    assert same["abs_log2_density"] == 0 and same["polyphony_diff"] == 0 and same["in_key"] == 1.0
    assert same["empty_bar_share"] == 0 and same["silent"] == 0 and same["velocity_hist_l1"] == 0
    half = truth.with_notes(truth.notes[:8])  # 8 notes of 16, second bar empty
    r = cb.compare(half, truth, (0, "major"), bars, [])
    assert r["abs_log2_density"] == pytest.approx(abs(math.log2(9 / 17)))
    assert r["empty_bar_share"] == 0.5
    silent = cb.compare(truth.with_notes([]), truth, (0, "major"), bars, [])
    assert silent["silent"] == 1.0 and silent["in_key"] == 0.0 and silent["velocity_hist_l1"] == pytest.approx(1.0)
    # Copying: a bar equal to a prompt bar (same onsets within the bar and pitches) counts.
    prompt_bars = cb.bar_contents(truth.notes, bars)
    assert cb.compare(truth, truth, (0, "major"), bars, prompt_bars[:1])["copy_rate"] == 0.5


def test_pooled_duplicates_and_single_velocity():
    a, b = clip_of([60, 64, 67]), clip_of([62, 65, 69], velocity=90)
    loud = clip_of([60, 64, 67], velocity=100)  # same notes as `a`: velocities do not make it different
    r = cb.pooled([a, b, loud, a.with_notes([])], [a, b])
    assert r["duplicate_rate"] == pytest.approx(2 / 3)
    assert r["single_velocity_share"] == 1.0
    assert cb.pooled([a, b], [b, a])["velocity_hist_l1_pooled"] == 0.0


def test_onsets_and_note_lengths_against_the_truth():
    truth = clip_of(C_MAJOR_SCALE, step=240)  # 8 eighth notes: 8 onsets, every note 1/2 beat
    chords = Clip([Note(i * 960, p, 960, 80) for i in range(4) for p in (60, 64)], 480,
                  [TempoChange(0, 120.0)], [TimeSignature(0, 4, 4)])  # 4 onsets of 2 half notes (2 beats)
    r = cb.compare(chords, truth, (0, "major"), [0, 1920, 3840], [])
    assert r["onsets"] == 4 and r["abs_log2_onsets"] == pytest.approx(abs(math.log2(5 / 9)))
    p = cb.pooled([chords, truth], [truth, truth])
    assert p["onset_ratio_pooled"] == pytest.approx(12 / 16)
    assert p["median_duration_beats"] == pytest.approx(1.25)  # 8 notes of 2 beats, 8 of 1/2
    assert p["duration_hist_l1_pooled"] == pytest.approx(1.0)  # half the notes moved to another bin
    assert cb.pooled([truth], [truth])["duration_hist_l1_pooled"] == 0.0
    # The stated rule: density, onsets and note lengths, all zero for the truth itself.
    truth_system = {"abs_log2_density": {"mean": 0.0}, "onset_ratio_pooled": 1.0, "duration_hist_l1_pooled": 0.0}
    assert cb.sampling_score(truth_system) == 0.0
    assert cb.sampling_score({**truth_system, "onset_ratio_pooled": 0.5}) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """A prepared folder with two "datasets" (scanned roots), every piece in the test split."""
    base = tmp_path_factory.mktemp("corpora")
    for name, first_seed in (("popish", 0), ("classicalish", 50)):
        for p in range(3):
            folder = base / name / f"piece{p}"
            folder.mkdir(parents=True)
            arpeggio_piece(first_seed + p, bars=12).save_midi(folder / "a.mid")
    out = tmp_path_factory.mktemp("data")
    prepare([base / "popish", base / "classicalish"], out, workers=1, val_frac=0.0, test_frac=0.999999,
            progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    Policy.create("tiny", RemiTokenizer(), seed=3).save(path)
    return path


def test_passages_and_baselines(two_datasets):
    tok = RemiTokenizer()
    passages = cb.pick_passages(two_datasets, tok, 4, seed=1)
    assert sorted(p.dataset for p in passages) == ["classicalish", "classicalish", "popish", "popish"]
    assert len({p.piece for p in passages}) == 4
    for i, p in enumerate(passages):
        truth = p.truth
        assert p.window_bar_ticks() == [0, 1920, 3840, 5760, 7680]
        assert all(0 <= n.start < 7680 for n in truth.notes) and len(p.prompt.notes) == 36
        # The arpeggio pieces repeat every 4 bars: repeating the prompt is the truth exactly.
        assert [(n.start, n.pitch) for n in p.repeated_prompt().notes] == [(n.start, n.pitch) for n in truth.notes]
        other = passages[cb.other_song_index(passages, i)]
        assert other.piece != p.piece and other.dataset == p.dataset


BENCH_ARGS = ["--n", "4", "--bars", "2", "--prompt-bars", "4", "--candidates", "2", "--samples", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def bench(two_datasets, tiny_model, tmp_path_factory):
    """One benchmark run of the tiny model: (output folder, what it printed)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert smart_main(["eval-continuation", "--model", f"tiny={tiny_model}", "--data", str(two_datasets),
                        *BENCH_ARGS, "--out", str(out)]) == 0
    return out, json.loads(printed.getvalue().strip().splitlines()[-1])


def test_benchmark_report_with_a_tiny_model(bench, two_datasets, tmp_path):
    out, printed = bench
    report = json.loads((out / "continuation.json").read_text())
    assert set(report["systems"]) == {"tiny", "repeat-prompt", "other-song", "truth"}
    assert set(report["datasets"]) == {"popish", "classicalish"}
    repeat = report["systems"]["repeat-prompt"]["all"]
    # Periodic pieces: the repeated prompt is exactly the true continuation.
    assert repeat["abs_log2_density"]["mean"] == 0 and repeat["polyphony_diff"]["mean"] == 0
    assert repeat["copy_rate"]["mean"] == 1.0 and repeat["velocity_hist_l1"]["mean"] == 0
    assert report["systems"]["truth"]["all"]["in_key"]["mean"] == repeat["in_key"]["mean"] > 0.9
    tiny = report["systems"]["tiny"]
    assert tiny["all"]["outputs"] == 8 and tiny["popish"]["outputs"] == 4
    assert len([r for r in report["per_passage"] if r["system"] == "tiny"]) == 8
    assert set(report["goals"]["tiny"]) >= {"in_key_at_least_0.95", "beats_repeat_on_density"}
    assert printed["goals"] == report["goals"]
    md = (out / "continuation.md").read_text()
    assert "| repeat-prompt |" in md and "## popish" in md
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        f"00-{report['passages'][0]['dataset']}-{s}.mid" for s in ("tiny", "truth")]
    assert smart_main(["eval-continuation", "--model", f"x={tmp_path / 'missing'}", "--data", str(two_datasets),
                    *BENCH_ARGS, "--out", str(tmp_path / "x")]) == 2


def test_nll_reports_each_dataset(two_datasets, tiny_model, capsys):
    assert nll_mod.main(["nll", "--model", str(tiny_model), "--data", str(two_datasets), "--context", "256"]) == 0
    report = json.loads(capsys.readouterr().out)
    by = report["by_dataset"]
    assert set(by) == {"popish", "classicalish"}
    assert sum(d["tokens"] for d in by.values()) == report["tokens"]
    assert sum(d["files"] for d in by.values()) == report["files"] == 6
    mean = sum(d["nll_per_token"] * d["tokens"] for d in by.values()) / report["tokens"]
    assert mean == pytest.approx(report["nll_per_token"], abs=1e-5)
    # --per-dataset: the budget is spent on each dataset, not on whichever comes first.
    assert nll_mod.main(["nll", "--model", str(tiny_model), "--data", str(two_datasets), "--context", "256",
                         "--max-tokens", "10", "--per-dataset"]) == 0
    budgeted = json.loads(capsys.readouterr().out)
    assert {d: v["files"] for d, v in budgeted["by_dataset"].items()} == {"popish": 1, "classicalish": 1}


def test_model_card_tables_reports_and_counts_every_earlier_run(bench, two_datasets, tiny_model, tmp_path, capsys):
    import numpy as np

    from training import model_card
    from training.pretrain import save_checkpoint

    # The model the run started from, with a card of its own that itself counts an earlier run.
    source = tmp_path / "source"
    Policy.load(tiny_model).save(source)
    (source / "model_card.json").write_text(json.dumps({"training": {
        "step": 30, "tokens_seen": 1000, "init_from": {"step": 5, "tokens_seen": 200}}}))
    run = tmp_path / "run"
    policy = Policy.load(tiny_model)
    optimizer = torch.optim.AdamW(policy.model.parameters())
    save_checkpoint(run, 7, policy, optimizer, np.random.default_rng(0), {"tokens_seen": 70}, keep=1)
    (run / "run_config.json").write_text(json.dumps({
        "config": "tiny", "steps": 7, "batch_size": 1, "seq_len": 256, "lr": 1e-4, "warmup": 1,
        "init_from": str(source), "init_from_card": {"path": str(source), "step": 30, "tokens_seen": 1000}}))
    reports = []
    for model, name, context in ((tiny_model, "new", 256), (source, "old", 256), (tiny_model, "new-short", 64)):
        assert nll_mod.main(["nll", "--model", str(model), "--data", str(two_datasets), "--context", str(context)]) == 0
        reports.append(tmp_path / f"{name}.json")
        reports[-1].write_text(capsys.readouterr().out)
    out = tmp_path / "exported"
    info = model_card.build_card(run, out, two_datasets, prompts=0, bars=4, seed=0, nll_max_tokens=None,
                                 skip_generation=True, nll_reports=[reports[0], reports[2]], compare_nll=[reports[1]],
                                 continuation_report=bench[0] / "continuation.json", continuation_model="tiny")
    assert info["training"]["lineage"] == {"steps": 35, "tokens_seen": 1200}
    evaluation = info["evaluation"]
    assert evaluation["context"] == 256 and set(evaluation["test"]["by_dataset"]) == {"popish", "classicalish"}
    # Every window measured is kept and tabled; the replaced model is compared only at the window it was measured at.
    assert set(evaluation["by_context"]) == {"64", "256"}
    short = json.loads(reports[2].read_text())["by_dataset"]["popish"]["nll_per_token"]
    assert evaluation["by_context"]["64"]["test"]["by_dataset"]["popish"]["nll_per_token"] == short
    card = (out / "README.md").read_text()
    assert "in all 42 steps and 1,270 tokens" in card
    old_popish = json.loads(reports[1].read_text())["by_dataset"]["popish"]["nll_per_token"]
    assert f"| 64 | test | popish | {short:.4f} |" in card and "model replaced" in card
    row_256 = next(line for line in card.splitlines() if line.startswith("| 256 | test | popish |"))
    assert row_256.endswith(f" {old_popish:.4f} |")
    assert next(line for line in card.splitlines() if line.startswith("| 64 | test | popish |")).endswith(" — |")
    with pytest.raises(model_card.UserError, match="not a `smart nll` report"):
        model_card.read_nll_reports([bench[0] / "continuation.json"])
    assert "| all | this model |" in card and "| popish | repeat-prompt |" in card
    # The source folder was overwritten by a sibling (another export continued from the same model): its
    # lineage is ours; an unrelated model there leaves only the card the run recorded.
    (source / "model_card.json").write_text(json.dumps({"training": {
        "step": 44, "tokens_seen": 500, "init_from": {"step": 30, "tokens_seen": 1000},
        "lineage": {"steps": 35, "tokens_seen": 1200}}}))
    assert model_card.lineage(json.loads((run / "run_config.json").read_text())) == {"steps": 35, "tokens_seen": 1200}
    (source / "model_card.json").write_text(json.dumps({"training": {"step": 44, "tokens_seen": 500}}))
    assert model_card.lineage(json.loads((run / "run_config.json").read_text())) == {"steps": 30, "tokens_seen": 1000}
    with pytest.raises(model_card.UserError, match="no system"):
        model_card.continuation_summary(bench[0] / "continuation.json", "absent")


def test_sampling_settings_of_the_benchmark_and_the_card(bench, two_datasets, tiny_model, tmp_path, capsys):
    """The benchmark samples with the shipped defaults unless told otherwise and records what it used;
    --temperature-factors is parsed and checked by GenerationSettings' validator; the card's refresh
    states the shipped defaults and re-measures generation in place."""
    from engine.api import GenerationSettings
    from training import model_card

    shipped = GenerationSettings()
    config = json.loads((bench[0] / "continuation.json").read_text())["config"]
    assert (config["temperature"], config["top_p"], config["temperature_factors"]) == (
        shipped.temperature, shipped.top_p, dict(shipped.temperature_factors))
    assert parse_temperature_factors("Pitch=0.8, Velocity=1.2") == {"Pitch": 0.8, "Velocity": 1.2}
    assert parse_temperature_factors("none") == {}
    for bad in ("Pitch", "Pitch=cool"):
        with pytest.raises(Exception, match="FAMILY=FACTOR"):
            parse_temperature_factors(bad)
    with pytest.raises(cb.UserError, match="unknown token family"):
        cb.run_benchmark([("tiny", str(tiny_model))], two_datasets, n=2, temperature_factors={"Chord": 0.5})
    assert smart_main(["eval-continuation", "--model", f"tiny={tiny_model}", "--data", str(two_datasets),
                       "--temperature-factors", "Pitch=0", "--out", str(tmp_path / "x")]) == 2
    report = cb.run_benchmark([("tiny", str(tiny_model))], two_datasets, n=2, bars=1, temperature=0.9, top_p=0.9,
                              temperature_factors={"Pitch": 0.5}, log=lambda *_: None)
    assert (report["config"]["temperature"], report["config"]["temperature_factors"]) == (0.9, {"Pitch": 0.5})
    assert "temperature × 0.5 on Pitch" in cb.markdown(report)

    folder = tmp_path / "model"
    Policy.load(tiny_model).save(folder)
    (folder / "model_card.json").write_text(json.dumps({"training": {
        "config": "tiny", "layers": 2, "hidden_size": 64, "heads": 4, "context_length": 1024, "vocab_size": 566,
        "parameters": 1, "dtype": "float16", "step": 1, "planned_steps": 1, "batch_size": 1, "seq_len": 256,
        "tokens_seen": 1, "epochs": 0.1, "hours": 0.0, "hardware": "CPU", "lr": 1e-4, "warmup": 1, "fim_rate": 0.25,
        "checkpoint": "x"}}))
    weights = (folder / "model.safetensors").read_bytes()
    assert model_card.main(["--refresh-card", "--out", str(folder), "--prompts", "2",
                            "--bars", "1", "--continuation-report", str(bench[0] / "continuation.json"),
                            "--continuation-model", "tiny", "--sampling-note", "Chosen on val."]) == 0
    capsys.readouterr()
    card = json.loads((folder / "model_card.json").read_text())
    assert card["sampling"]["temperature"] == shipped.temperature and card["sampling"]["notes"] == ["Chosen on val."]
    assert card["generation"]["prompts"] == 2 and card["generation"]["top_p"] == shipped.top_p
    readme = (folder / "README.md").read_text()
    assert "## Sampling defaults" in readme and "Chosen on val." in readme and "| all | this model |" in readme
    assert (folder / "model.safetensors").read_bytes() == weights


def test_a_midi_folder_as_data_says_to_prepare_it(tmp_path, capsys):
    arpeggio_piece(1).save_midi(tmp_path / "a.mid")
    code = smart_main(["eval-continuation", "--model", f"x={tmp_path}", "--data", str(tmp_path), "--out",
                       str(tmp_path / "out")])
    assert code == 2 and "smart prepare-data" in capsys.readouterr().err
