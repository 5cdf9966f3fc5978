"""pretrain: example construction (crops, FIM in the infill_prompt format), learning, resume, and `nll`."""

import json
import math

import numpy as np
import pytest
import torch

from engine.music import Clip, Note, TempoChange, TimeSignature
from engine.tokenizer import RemiTokenizer
from test_data import arpeggio_piece, make_corpus
from training import examples as examples_mod
from training import nll as nll_mod
from training import pretrain as pretrain_mod
from training.data import TokenSplit, prepare
from training.examples import ExampleBuilder, collate
from training.pretrain import learning_rate

torch.set_num_threads(1)  # tiny models: threads only add overhead on the shared 2-core machines


@pytest.fixture(scope="module")
def tok():
    return RemiTokenizer()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "mini"
    make_corpus(root, pieces=16)
    out = tmp_path_factory.mktemp("data")
    prepare([root], out, workers=1, val_frac=0.25, test_frac=0.25, progress=False)
    return out


def pretrain(data_dir, out, *extra):
    args = ["pretrain", "--data", str(data_dir), "--config", "tiny", "--out", str(out), "--batch-size", "8",
            "--seq-len", "160", "--lr", "3e-3", "--warmup", "10", "--eval-examples", "8", "--quiet",
            "--threads", "1", *extra]
    assert pretrain_mod.main(args) == 0


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def unigram_entropy(data_dir) -> float:
    """Entropy (nats/token) of the training tokens' unigram distribution: the no-context baseline."""
    counts = np.bincount(np.asarray(TokenSplit(data_dir, "train").tokens, dtype=np.int64)).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------------------- examples
def piece_with_tempo_changes() -> Clip:
    notes = []
    for bar in range(10):
        if bar == 4:
            continue  # an empty bar inside the piece
        offset = 0 if bar % 2 == 0 else 480  # some bars start on a note, some later
        notes += [Note(bar * 1920 + offset, 60 + bar, 240), Note(bar * 1920 + offset + 480, 64 + bar, 240, 100)]
    return Clip(notes, 480, [TempoChange(0, 96.0), TempoChange(3 * 1920, 132.0), TempoChange(6 * 1920 + 480, 80.0)],
                [TimeSignature(0, 4, 4)])


@pytest.mark.parametrize("start,end", [(0, 1), (0, 3), (1, 2), (2, 5), (3, 4), (4, 6), (6, 8), (7, 10), (9, 10), (0, 10)])
def test_fim_example_matches_infill_prompt(tok, start, end):
    """The token-level FIM split equals RemiTokenizer.infill_prompt + middle bars + EOS."""
    clip = piece_with_tempo_changes()
    ids = np.array(tok.encode(clip))
    builder = ExampleBuilder(tok, seq_len=4096)
    ex = builder.fim(ids, np.random.default_rng(0), span=(start, end))
    spans = tok.bar_spans(ids.tolist())
    middle = ids[spans[start][0]:spans[end - 1][1]].tolist()
    expected = tok.infill_prompt(clip, start, end) + middle + [tok.eos_id]
    assert ex.ids.tolist() == expected, (tok.ids_to_tokens(ex.ids), tok.ids_to_tokens(expected))
    assert ex.ids[ex.loss_from - 1] == tok.fim_middle_id  # validation scores the middle and EOS only


def test_fim_examples_fit_the_window_with_whole_bars(tok):
    ids = np.array(tok.encode(arpeggio_piece(5, bars=40)))
    builder = ExampleBuilder(tok, seq_len=128)
    rng = np.random.default_rng(1)
    for _ in range(50):
        ex = builder.fim(ids, rng)
        assert ex is not None and len(ex.ids) <= 128
        t = ex.ids.tolist()
        pre, suf, mid = t.index(tok.fim_prefix_id), t.index(tok.fim_suffix_id), t.index(tok.fim_middle_id)
        assert pre == 0 and pre < suf < mid and t[-1] == tok.eos_id
        for lo, hi in ((pre + 1, suf), (suf + 1, mid), (mid + 1, len(t) - 1)):
            assert hi == lo or t[lo] == tok.bar_id  # every part is whole bars
        assert t[mid + 1] == tok.bar_id


def test_continuation_crops(tok):
    ids = np.array(tok.encode(arpeggio_piece(2, bars=30)))
    builder = ExampleBuilder(tok, seq_len=100)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        ex = builder.continuation(ids, rng)
        t = ex.ids.tolist()
        assert len(t) <= 100
        if t[0] == tok.bos_id:
            assert t[1:len(t)] == ids[:len(t) - 1].tolist()
        else:
            assert t[0] == tok.bar_id
        if t[-1] == tok.eos_id:
            assert t[-2] == ids[-1]
        starts.add(t[0] == tok.bos_id)
    assert starts == {True, False}
    whole = builder.continuation(np.array(tok.encode(arpeggio_piece(2, bars=1))), rng)
    assert whole.ids[0] == tok.bos_id and whole.ids[-1] == tok.eos_id


def test_collate_pads_with_ignored_labels(tok):
    builder = ExampleBuilder(tok, seq_len=64)
    ids = np.array(tok.encode(arpeggio_piece(2, bars=1)))
    ex = builder.continuation(ids, np.random.default_rng(0))
    x, mask, labels = collate([ex], tok.pad_id, 64)
    n = len(ex.ids)
    assert (x[0, n:] == tok.pad_id).all() and (labels[0, n:] == -100).all() and (mask[0, n:] == 0).all()
    assert (labels[0, :n] == x[0, :n]).all()


def test_learning_rate_schedule():
    lrs = [learning_rate(s, 1e-3, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert learning_rate(100, 1e-3, 10, 100) == pytest.approx(1e-4)


# ---------------------------------------------------------------------------- training
def test_pretrain_beats_the_unigram_baseline(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(data_dir, out, "--steps", "60", "--eval-every", "60", "--save-every", "60")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 61))
    assert "val_loss_continuation" in log[-1] and "val_loss_infill" in log[-1]
    baseline = unigram_entropy(data_dir)
    # A 60-step tiny model on this regular music must already be far better than token frequencies.
    assert log[-1]["val_loss_continuation"] < 0.75 * baseline, (log[-1], baseline)
    assert result["step"] == 60 and result["tokens_seen"] == log[-1]["tokens_seen"]
    ckpt = pretrain_mod.latest_checkpoint(out)
    assert ckpt.name == "step-0000060" and (ckpt / "model.safetensors").exists()
    assert not list((out / "checkpoints").glob(".tmp-*"))

    # `smart nll` on the validation split agrees with the training loop's view of it.
    assert nll_mod.main(["nll", "--model", str(ckpt), "--data", str(data_dir), "--split", "val",
                         "--context", "160"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"nll_per_token", "tokens", "files", "skipped", "vocab_size"} <= set(report)
    assert report["vocab_size"] == RemiTokenizer().vocab_size
    assert report["tokens"] == TokenSplit(data_dir, "val").num_tokens + report["files"]  # + EOS, BOS not scored
    assert report["nll_per_token"] < 0.75 * baseline


@pytest.mark.slow
def test_pretrain_longer_learns_the_corpus_well(data_dir, tmp_path):
    out = tmp_path / "run"
    pretrain(data_dir, out, "--steps", "300", "--eval-every", "100", "--save-every", "300")
    log = read_log(out)
    evals = [r for r in log if "val_loss_continuation" in r]
    assert [r["step"] for r in evals] == [100, 200, 300]
    baseline = unigram_entropy(data_dir)
    assert evals[-1]["val_loss_continuation"] < 0.4 * baseline, (evals, baseline)
    assert evals[-1]["val_loss_infill"] < 0.4 * baseline
    assert evals[-1]["val_loss_continuation"] < evals[0]["val_loss_continuation"]


def test_resume_continues_steps_and_the_loss_curve(data_dir, tmp_path):
    # Reference: 16 steps in one go.
    straight = tmp_path / "straight"
    pretrain(data_dir, straight, "--steps", "16", "--save-every", "5", "--eval-every", "0", "--no-augment")
    # Interrupted: "killed" after step 12 (last checkpoint at 10), then resumed.
    broken = tmp_path / "broken"
    pretrain(data_dir, broken, "--steps", "16", "--save-every", "5", "--eval-every", "0", "--no-augment",
             "--stop-after", "12")
    assert [r["step"] for r in read_log(broken)] == list(range(1, 13))
    assert pretrain_mod.latest_checkpoint(broken).name == "step-0000010"
    pretrain(data_dir, broken, "--steps", "16", "--save-every", "5", "--eval-every", "0", "--no-augment", "--resume")
    resumed, reference = read_log(broken), read_log(straight)
    assert [r["step"] for r in resumed] == list(range(1, 17))  # steps 11–12 redone once, nothing missing
    # Same data stream, weights and optimizer state after resume: the loss curve continues exactly.
    for a, b in zip(resumed, reference):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-4), (a, b)
        assert a["tokens_seen"] == b["tokens_seen"]
    assert pretrain_mod.latest_checkpoint(broken).name == "step-0000016"
    assert len(pretrain_mod.checkpoint_dirs(broken)) == 3  # --keep 3


def test_init_from_continues_a_model_and_the_card_counts_both_runs(data_dir, tmp_path, capsys):
    from engine.policy import Policy
    from training.model_card import render_card

    first = tmp_path / "first"
    pretrain(data_dir, first, "--steps", "30", "--save-every", "30", "--eval-every", "30")
    source = pretrain_mod.latest_checkpoint(first)
    # The source's own card, as `training.model_card` writes it next to an exported model.
    (source / "model_card.json").write_text(json.dumps({"training": {"step": 30, "tokens_seen": 1234, "hours": 0.01,
                                                                     "hardware": "test"}}))
    second = tmp_path / "second"
    pretrain(data_dir, second, "--init-from", str(source), "--steps", "1", "--save-every", "1", "--eval-every", "0",
             "--lr", "1e-9", "--warmup", "0")
    log = read_log(second)
    assert [r["step"] for r in log] == [1]  # a fresh schedule, not step 31
    before = Policy.load(source).model.state_dict()
    after = Policy.load(pretrain_mod.latest_checkpoint(second)).model.state_dict()
    for name, tensor in before.items():  # started from the source's weights (the LR is ~0)
        assert torch.allclose(tensor, after[name], atol=1e-5), name
    # Its first loss is where the source run ended, far below where a fresh model starts.
    first_log = read_log(first)
    assert log[0]["loss"] < first_log[0]["loss"] - 1.0
    assert log[0]["loss"] == pytest.approx(first_log[-1]["loss"], abs=0.5)
    run_config = json.loads((second / "run_config.json").read_text())
    assert run_config["init_from_card"]["step"] == 30
    card = render_card({"training": {"config": "tiny", "layers": 1, "hidden_size": 1, "heads": 1, "context_length": 1,
                                     "vocab_size": 1, "parameters": 1, "dtype": "float32", "step": 1, "planned_steps": 1,
                                     "batch_size": 8, "seq_len": 160, "tokens_seen": 100, "epochs": 0.1, "hours": 0.0,
                                     "hardware": "test", "lr": 1e-9, "warmup": 0, "fim_rate": 0.25, "checkpoint": "x",
                                     "init_from": run_config["init_from_card"]},
                        "data": None, "evaluation": {}, "generation": None})
    assert "in all 31 steps and 1,334 tokens" in card
    # A model with another vocabulary is refused with a clear message.
    other = tmp_path / "other"
    import miditok

    from engine.tokenizer import default_config

    config = default_config()
    config.num_velocities = 8
    Policy.create("tiny", RemiTokenizer(miditok.REMI(config))).save(other)
    args = ["pretrain", "--data", str(data_dir), "--config", "tiny", "--out", str(tmp_path / "third"),
            "--init-from", str(other), "--steps", "1", "--quiet"]
    assert pretrain_mod.main(args) == 2
    assert "tokenizer differs" in capsys.readouterr().err


def test_fresh_run_refuses_to_overwrite_and_resume_without_checkpoint_starts(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(data_dir, out, "--steps", "2", "--save-every", "1", "--eval-every", "0")
    args = ["pretrain", "--data", str(data_dir), "--config", "tiny", "--out", str(out), "--steps", "3", "--quiet"]
    assert pretrain_mod.main(args) == 2
    assert "--resume" in capsys.readouterr().err


def test_nll_on_midi_files_counts_skips(data_dir, tmp_path, capsys):
    from engine.policy import Policy

    model_dir = tmp_path / "model"
    Policy.create("tiny", RemiTokenizer(), seed=0).save(model_dir)
    corpus = tmp_path / "c"
    make_corpus(corpus, pieces=2)
    assert nll_mod.main(["nll", "--model", str(model_dir), "--data", str(corpus), "--context", "64"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 4 and report["skipped"] == 3
    # An untrained model is close to uniform over the vocabulary.
    assert abs(report["nll_per_token"] - math.log(report["vocab_size"])) < 0.5
    # Sliding windows score every token once, whatever the window.
    assert nll_mod.main(["nll", "--model", str(model_dir), "--data", str(corpus), "--context", "1024"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == report["tokens"]
    assert nll_mod.main(["nll", "--model", str(tmp_path / "missing"), "--data", str(corpus)]) == 2


def test_score_windows_cover_each_target_once():
    for n, context, stride in [(1, 4, 2), (2, 4, 2), (4, 4, 2), (5, 4, 2), (10, 4, 2), (11, 4, 3), (100, 10, 1), (37, 16, 8)]:
        windows = nll_mod.score_windows(n, context, stride)
        targets = [t for begin, end, first in windows for t in range(first, end)]
        assert targets == list(range(1, n))
        assert all(end - begin <= context and first > begin for begin, end, first in windows)


# ---------------------------------------------------------------------------- the CPU recipe
def test_wsd_schedule_warms_holds_and_decays():
    stable = pretrain_mod.Schedule(1e-3, warmup=10)
    assert stable.lr(0) == pytest.approx(1e-4) and stable.lr(9) == pytest.approx(1e-3)
    assert {stable.lr(s) for s in range(10, 5000, 97)} == {1e-3}  # an open stable phase
    assert stable.phase(5) == "warmup" and stable.phase(500) == "stable" and stable.end is None
    decay = pretrain_mod.Schedule(1e-3, warmup=10, decay_start=100, decay_steps=50, min_ratio=0.1)
    lrs = [decay.lr(s) for s in range(100, 151)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    # 1−sqrt: a quarter of the way in, half of the drop is done.
    assert decay.lr(100 + 50 // 4) < 1e-3 - 0.45 * (1e-3 - 1e-4)
    assert decay.phase(120) == "decay" and decay.end == 150
    assert pretrain_mod.Schedule.from_dict(decay.to_dict()) == decay


def test_resume_keeps_the_schedule_the_run_started_with(data_dir, tmp_path):
    common = ("--save-every", "3", "--eval-every", "0", "--no-augment", "--warmup", "4")
    straight = tmp_path / "straight"
    pretrain(data_dir, straight, "--steps", "8", "--decay-steps", "4", *common)
    broken = tmp_path / "broken"
    pretrain(data_dir, broken, "--steps", "8", "--decay-steps", "4", "--stop-after", "4", *common)
    # Resumed with other arguments: the stored schedule wins, so the LRs (and losses) continue exactly.
    pretrain(data_dir, broken, "--steps", "8", "--resume", *common[:-2], "--warmup", "50", "--lr", "9e-2")
    a, b = read_log(straight), read_log(broken)
    assert [r["lr"] for r in a] == pytest.approx([r["lr"] for r in b])
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-4)
    assert a[-1]["lr"] < a[3]["lr"]  # it did decay


def test_init_from_never_warms_above_the_model_lr(data_dir, tmp_path, capsys):
    first = tmp_path / "first"
    pretrain(data_dir, first, "--steps", "2", "--save-every", "2", "--eval-every", "0")
    source = pretrain_mod.latest_checkpoint(first)
    (source / "model_card.json").write_text(json.dumps({"training": {"step": 2, "lr": 1e-3, "stable_lr": 2e-4}}))
    second = tmp_path / "second"
    args = ["pretrain", "--data", str(data_dir), "--config", "tiny", "--out", str(second), "--batch-size", "4",
            "--seq-len", "160", "--lr", "3e-3", "--warmup", "2", "--steps", "4", "--eval-every", "0", "--threads", "1",
            "--init-from", str(source)]
    assert pretrain_mod.main(args) == 0
    assert max(r["lr"] for r in read_log(second)) == pytest.approx(2e-4)
    assert "warming to 0.0002 instead" in capsys.readouterr().err


def test_decay_branch_leaves_the_stable_run_resumable(data_dir, tmp_path):
    stable = tmp_path / "stable"
    pretrain(data_dir, stable, "--steps", "6", "--save-every", "3", "--eval-every", "0", "--warmup", "2")
    branch = tmp_path / "decay"
    pretrain(data_dir, branch, "--decay-from", str(stable), "--decay-steps", "4", "--save-every", "2",
             "--eval-every", "4")
    log = read_log(branch)
    assert [r["step"] for r in log] == [7, 8, 9, 10]  # continues the stable run's step count
    assert log[0]["lr"] == pytest.approx(3e-3) and log[-1]["lr"] < 3e-3 and "val_loss_continuation" in log[-1]
    assert log[0]["tokens_seen"] > read_log(stable)[-1]["tokens_seen"]
    config = json.loads((branch / "run_config.json").read_text())
    assert config["decay_of"]["step"] == 6 and config["schedule"]["decay_start"] == 6
    # The stable run is untouched and goes on at its constant LR.
    pretrain(data_dir, stable, "--steps", "8", "--save-every", "4", "--eval-every", "0", "--resume")
    assert [r["lr"] for r in read_log(stable)[-2:]] == pytest.approx([3e-3, 3e-3])
    # A decay needs its length; a branch cannot also be an --init-from.
    bad = ["pretrain", "--data", str(data_dir), "--out", str(tmp_path / "x"), "--decay-from", str(stable)]
    assert pretrain_mod.main(bad) == 2


def test_equal_length_groups_give_the_padded_batch_loss(tok):
    from engine.policy import Policy

    torch.manual_seed(0)
    model = Policy.create("tiny", tok).model.eval()
    rng = np.random.default_rng(0)
    examples = [examples_mod.Example(rng.integers(3, tok.vocab_size, size=n)) for n in (40, 25, 40, 17)]
    groups = examples_mod.same_length_groups(examples, seq_len=64, batch_size=4)
    assert [len(g) for g in groups] == [2, 1, 1] and [len(g[0].ids) for g in groups] == [40, 25, 17]
    with torch.no_grad():
        summed = sum(float(examples_mod.summed_loss(model, g, tok, 64, "cpu")[0]) for g in groups)
        ids, mask, labels = collate(examples, tok.pad_id, 40)
        padded = float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    assert summed / sum(len(e.ids) - 1 for e in examples) == pytest.approx(padded, rel=1e-5)


def test_precision_and_threads_are_chosen_by_the_hardware(monkeypatch):
    import engine.cpu

    monkeypatch.setattr(engine.cpu, "native_bf16", lambda: False)
    assert pretrain_mod.choose_precision("auto", cuda=False) == "no"  # emulated bf16 is ~25x slower here
    assert pretrain_mod.choose_precision("bf16", cuda=False) == "bf16"
    monkeypatch.setattr(engine.cpu, "native_bf16", lambda: True)
    assert pretrain_mod.choose_precision("auto", cuda=False) == "bf16"
    assert pretrain_mod.choose_precision("float32", cuda=False) == "no"
    before = torch.get_num_threads()
    try:
        best, timings = pretrain_mod.choose_threads(lambda n: {1: 1.0, 2: 1.7}[n], [1, 2])
        assert best == 1 and timings == {1: 1.0, 2: 1.7} and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_goes_on(data_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "training.pretrain", "pretrain", "--data", str(data_dir), "--config", "tiny",
           "--out", str(out), "--batch-size", "2", "--seq-len", "64", "--steps", "100000", "--save-every", "100000",
           "--eval-every", "0", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    import time

    deadline = time.monotonic() + 600  # torch's import alone can take a minute on a loaded 2-core machine
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no training step within 10 minutes"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped at step" in err
    last = pretrain_mod.latest_checkpoint(out)
    assert last is not None and int(last.name[5:]) == read_log(out)[-1]["step"]  # nothing lost
