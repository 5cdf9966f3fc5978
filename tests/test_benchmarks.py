"""Every benchmark runs (slow suite): each script once with a tiny model and one short iteration, so a
refactor that breaks one fails here instead of rotting unseen. No timing is asserted: the figures are
BENCHMARKS.md's, measured on a quiet machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from engine.policy import Policy

    directory = tmp_path_factory.mktemp("bench") / "tiny"
    Policy.create("tiny", seed=0).save(directory)
    return directory


@pytest.fixture(scope="module")
def midi_folder(tmp_path_factory) -> Path:
    """A few 12-bar piano pieces (bench_taste cuts its prompts after bar 8)."""
    from engine.music import Clip, Note

    folder = tmp_path_factory.mktemp("bench-midi")
    for k in range(16):
        notes = [Note(i * 480, 48 + (i * 7 + k * 5) % 36, 400, 70 + i % 30) for i in range(12 * 4)]
        Clip(notes, ppq=480).save_midi(folder / f"piece-{k:02d}.mid")
    return folder


# (script, arguments); {model} and {data} are filled in by the fixtures.
SMOKE = {
    "bench_decode.py": ["--new-tokens", "8", "--prompt", "8", "--skip-hf", "--threads", "1"],
    "bench_first_notes.py": ["--model", "{model}", "--runs", "1", "--candidates", "1", "--bars", "1"],
    "bench_grpo.py": ["--model", "tiny", "--maa", "none", "--steps", "1", "--prompts-per-step", "1", "--group", "2",
                      "--max-completion-tokens", "16", "--cpu-threads", "1", "--render-processes", "1"],
    "bench_host_load.py": ["--model", "{model}", "--clients", "2", "--requests", "1", "--candidates", "1",
                           "--bars", "1", "--max-new-tokens", "8"],
    "bench_live.py": ["--smoke"],
    "bench_maa.py": ["--config", "small", "--batch-sizes", "1", "--windows", "1", "--repeats", "1", "--clips", "4",
                     "--threads", "1"],
    "bench_pianoroll.py": ["--notes", "200", "--frames", "3"],
    "bench_playback.py": ["--seconds", "1"],
    "bench_pretrain.py": ["--smoke"],
    "bench_procedural_factors.py": ["--model", "{model}", "--prompts", "2", "--batch", "2", "--bars", "1", "none"],
    "bench_render.py": ["--clips", "1", "--seconds", "1"],
    "bench_rollout_gap.py": ["--model", "{model}", "--rollouts", "2", "--tokens", "16"],
    "bench_studio_start.py": ["--runs", "1"],
    # The tune step is left out: a random tiny model's continuations are mostly silent, so its picks hold no
    # decisive pair to tune on (tuning itself: tests/test_taste.py).
    "bench_taste.py": ["--model", "{model}", "--data", "{data}", "--listeners", "high-register,singer",
                       "--representations", "midi", "--train-pairs", "12", "--test-pairs", "2", "--eval-prompts", "1",
                       "--eval-seeds", "1", "--skip-tune"],
}


def test_every_benchmark_has_a_smoke_run():
    assert sorted(SMOKE) == sorted(p.name for p in BENCHMARKS.glob("bench_*.py"))


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_smoke(script, tiny_model, midi_folder, tmp_path):
    if script == "bench_live.py" and shutil.which("jackd") is None:
        pytest.skip("bench_live plays over a JACK server: jackd is not installed")
    args = [a.format(model=tiny_model, data=midi_folder) for a in SMOKE[script]]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", SMART_JOBS_DIR=str(tmp_path / "jobs"))
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
