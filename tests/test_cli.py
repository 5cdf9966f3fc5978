"""The `smart` CLI contract: outputs, and one clear line + non-zero exit for every bad input."""

import json
import subprocess
import sys

import pytest

from engine.cli import main
from engine.music import Clip, Note, TempoChange
from engine.policy import Policy
from engine.scorer import build_maa_model, save_checkpoint_pt


@pytest.fixture(scope="module")
def midi(tmp_path_factory):
    d = tmp_path_factory.mktemp("midi")
    clip = Clip([Note(i * 240, 55 + (i * 7) % 24, 240, 70 + i % 40) for i in range(32)], 480, [TempoChange(0, 120.0)])
    clip.save_midi(d / "sketch.mid")
    return d / "sketch.mid"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny"
    Policy.create("tiny", seed=0).save(d)
    return d


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_render_writes_a_wav(capsys, midi, tmp_path):
    code, out, err = run(capsys, "render", midi, tmp_path / "o.wav", "--sample-rate", 16000, "--seconds", 2)
    assert code == 0, err
    assert json.loads(out)["seconds"] == 2.0
    assert (tmp_path / "o.wav").stat().st_size > 16000 * 2 * 2


def test_features_one_json_object_per_file(capsys, midi):
    code, out, err = run(capsys, "features", midi, midi)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 2
    assert {"n_notes", "polyphony_rate", "empty_beat_rate", "pitch_range", "scale_consistency", "velocity_range",
            "pitch_histogram", "velocity_histogram"} <= set(rows[0])
    assert rows[0]["n_notes"] == 32


def test_score_without_weights_exits_2_with_the_message(capsys, midi, monkeypatch, tmp_path):
    monkeypatch.setenv("SMART_MAA_CHECKPOINT", str(tmp_path / "none.pt"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, out, err = run(capsys, "score", midi)
    assert code == 2 and out == ""
    assert "MAA weights not installed" in err and "Traceback" not in err


def test_score_with_a_local_checkpoint(capsys, midi, tmp_path):
    ckpt = save_checkpoint_pt(build_maa_model(small=True), tmp_path / "checkpoint.pt")
    code, out, err = run(capsys, "score", midi, "--maa", ckpt)
    assert code == 0, err
    row = json.loads(out)
    assert set("CE CU PC PQ".split()) <= set(row)


def test_generate_writes_candidates(capsys, midi, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SMART_MAA_CHECKPOINT", str(tmp_path / "none.pt"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out_dir = tmp_path / "gen"
    code, out, err = run(capsys, "generate", "--model", tiny_model, "--prompt", midi, "--prompt-bars", 2,
                         "--candidates", 2, "--bars", 2, "--max-tokens", 120, "--seed", 1,
                         "--temperature-factors", "Pitch=0.8,Duration=1.3", "--out", out_dir)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and all(r["scores"] is None for r in rows)
    for r in rows:
        clip, _ = Clip.from_midi(r["file"])
        assert len(clip.notes) >= 8  # the prompt's last 2 bars at least
        assert "n_notes" in r["features"]


def test_bad_inputs_one_line_no_traceback(capsys, tmp_path, midi, tiny_model):
    junk = tmp_path / "junk.mid"
    junk.write_bytes(b"\x00\x01garbage" * 50)
    zero_ppq = tmp_path / "zero.mid"
    zero_ppq.write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x00MTrk\x00\x00\x00\x04\x00\xff\x2f\x00")
    truncated = tmp_path / "trunc.mid"
    truncated.write_bytes(midi.read_bytes()[:30])
    bad_sf = tmp_path / "bad.sf2"
    bad_sf.write_bytes(b"RIFF....nope")
    not_model = tmp_path / "notmodel"
    not_model.mkdir()
    cases = [
        ("render", tmp_path / "missing.mid", tmp_path / "x.wav"),
        ("render", junk, tmp_path / "x.wav"),
        ("render", zero_ppq, tmp_path / "x.wav"),
        ("render", truncated, tmp_path / "x.wav"),
        ("render", midi, tmp_path / "x.wav", "--soundfont", bad_sf),
        ("render", midi, tmp_path / "x.wav", "--soundfont", tmp_path / "none.sf2"),
        ("features", junk),
        ("generate", "--model", not_model, "--procedural", "--out", tmp_path / "g1"),
        ("generate", "--model", tiny_model, "--prompt", junk, "--out", tmp_path / "g2"),
        ("generate", "--model", tiny_model, "--procedural", "--candidates", 0, "--out", tmp_path / "g3"),
        ("generate", "--model", tiny_model, "--procedural", "--temperature-factors", "Loudness=0.5",
         "--out", tmp_path / "g4"),
    ]
    for argv in cases:
        code, out, err = run(capsys, *argv)
        assert code != 0, argv
        lines = [line for line in err.strip().splitlines() if line]
        assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "x.wav").exists()
    assert not any((tmp_path / g).exists() for g in ("g1", "g2", "g3", "g4"))


def test_console_script_entry_point(midi):
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "features", str(midi)], capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["n_notes"] == 32


def test_commands_come_from_entry_points_in_help_order(capsys):
    """`smart` gathers its commands from the `smart.commands` entry points (training registers its own);
    --help lists them in the same order as before, and the host's job command stays hidden."""
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("COMMAND", 2)[-1].splitlines()
              if line.startswith("    ") and not line.startswith("     ")]
    before = ["render", "features", "score", "generate", "prepare-data", "pretrain", "nll", "grpo", "eval", "serve"]
    assert [c for c in listed if c in before] == before  # newer commands may sit between, in entry-point order
    assert "host-job" not in listed


def test_a_command_module_that_cannot_be_imported_is_noted(capsys, monkeypatch):
    from importlib.metadata import EntryPoint

    import engine.cli

    eps = [EntryPoint("10-engine", "engine.commands", "smart.commands"),
           EntryPoint("90-broken", "engine.no_such_module_here", "smart.commands"),
           EntryPoint("95-needs", "tests_missing_dependency_probe", "smart.commands")]
    monkeypatch.setattr(engine.cli, "entry_points", lambda group: eps if group == "smart.commands" else [])
    parser = engine.cli.build_parser()
    assert "render" in parser.format_help()  # the importable module still registers its commands
    assert parser.epilog is None  # modules that are not part of this build are skipped quietly

    def broken(self):
        raise ModuleNotFoundError("No module named 'somedep'", name="somedep")

    monkeypatch.setattr(EntryPoint, "load", broken)
    assert "unavailable: 10-engine" in engine.cli.build_parser().epilog


def test_generate_help_says_what_temperature_0_does(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "0 is greedy" in out


def test_render_writes_the_format_its_suffix_names_and_refuses_others(capsys, midi, tmp_path):
    """`smart render song.mid out.mp3` used to write WAV bytes into the .mp3 and exit 0 (issue 24)."""
    import soundfile

    for suffix, container in ((".flac", "FLAC"), (".ogg", "OGG"), (".mp3", "MP3")):
        out_file = tmp_path / f"o{suffix}"
        code, _out, err = run(capsys, "render", midi, out_file, "--sample-rate", 44100, "--seconds", 1)
        assert code == 0, err
        assert soundfile.info(str(out_file)).format == container
    code, out, err = run(capsys, "render", midi, tmp_path / "o.m4a")
    assert code == 2 and out == "" and not (tmp_path / "o.m4a").exists()
    assert ".m4a" in err and ".mp3" in err and len(err.strip().splitlines()) == 1


def test_generate_refuses_a_file_name_as_out_before_loading_the_model(capsys, tmp_path, monkeypatch):
    """`--out song.mid` is refused at once, not after the model's 38 s load (issue 24)."""
    import engine.policy

    def no_load(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(engine.policy.Policy, "load", no_load)
    code, out, err = run(capsys, "generate", "--procedural", "--out", tmp_path / "song.mid")
    assert code == 2 and out == ""
    assert "--out takes a folder" in err and "song.mid" in err
    assert not (tmp_path / "song.mid").exists()


def test_score_without_weights_points_at_its_own_download(capsys, midi, monkeypatch, tmp_path):
    monkeypatch.setenv("SMART_MAA_CHECKPOINT", str(tmp_path / "none.pt"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _out, err = run(capsys, "score", midi)
    assert code == 2 and "--download" in err and len(err.strip().splitlines()) == 1
