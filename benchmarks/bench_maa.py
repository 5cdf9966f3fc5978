"""MAA scoring on CPU: the exact float32 model vs FastCPUForward (the CPU default), in one run.

    uv run python benchmarks/bench_maa.py                            # full-size random weights, 1 thread
    uv run python benchmarks/bench_maa.py --threads 2 --batch-sizes 1 4
    uv run python benchmarks/bench_maa.py --precisions bf16 int8     # both fast precisions vs exact
    uv run python benchmarks/bench_maa.py --maa PATH                 # agreement with the real weights
    uv run python benchmarks/bench_maa.py --as-cpu-without-bf16      # a laptop CPU's path (AVX2 stand-in)
    uv run python benchmarks/bench_maa.py --device cuda --skip-agreement   # windows/s on a GPU (bf16)

Timing: seconds per 10-s window for each path (exact float32 and FastCPUForward at each of --precisions,
default: the one this CPU gets), repeats interleaved so every path sees the same load, best of
--repeats, process CPU time and wall time (on a shared machine the CPU figure is the steadier one), and
the speed-up. The first call of each path (building it + one window) is printed too.

Agreement: with random weights the heads are nearly constant (a random 768→1 projection of a
unit-norm embedding), so "the scores agree" alone would prove nothing. Three figures per axis, over
varied rendered piano music (dense/sparse, low/high, loud/soft, tempos, short clips that are padded):
* ``own heads``: max |fast − exact| on the 1–10 scale with the model's own heads, next to the spread
  (max − min) of the exact scores over the clips;
* ``calibrated heads``: each axis gets a linear head along one principal direction of the exact
  embeddings (axis k: direction k), scaled so its exact scores have a standard deviation of 1 point
  across the clips — a head that actually separates these clips; max |fast − exact| of that head;
* ``embedding error / spread``: rms |e_fast − e_exact| / rms |e_exact − mean e_exact| of the pooled
  embeddings the heads read: the error of any head as a fraction of the spread it sees.
Random weights are for timing and this check only: recheck with the real weights (``--maa``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.music import Clip, Note, TempoChange  # noqa: E402
from engine.render import render  # noqa: E402
from engine.cpu import cpu_flags, native_bf16  # noqa: E402
from engine.scorer import (  # noqa: E402
    AXES,
    FAST_CPU_PRECISIONS,
    MAA_SAMPLE_RATE,
    WINDOW_SAMPLES,
    MAAScorer,
    build_maa_model,
    default_fast_cpu_precision,
    fill_windows,
)

GOAL_SPEEDUP = 2.5
GOAL_MAX_DIFF = 0.02


def varied_music(n: int, seed: int = 0) -> list[np.ndarray]:
    """n rendered piano clips (16 kHz) of varied density, register, loudness and tempo; every fourth
    one is 3–7 s long, so padded windows are part of the check."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        bpm = float(rng.uniform(60, 180))
        seconds = float(rng.uniform(3, 7)) if i % 4 == 3 else 10.0
        ppq = 480
        ticks = int(seconds * bpm / 60 * ppq)
        notes_per_beat = rng.choice([0.5, 1, 2, 4, 8])
        low = int(rng.integers(21, 72))
        span = int(rng.integers(5, 36))
        velocity = int(rng.integers(30, 120))
        step = max(1, int(ppq / notes_per_beat))
        notes = []
        for start in range(0, max(1, ticks - step), step):
            for _ in range(int(rng.integers(1, 4))):  # 1–3 note chords
                notes.append(Note(start, int(min(108, low + rng.integers(0, span))), int(step * rng.uniform(0.5, 2)),
                                  int(np.clip(velocity + rng.integers(-15, 16), 1, 127))))
        clip = Clip(notes=notes, ppq=ppq, tempos=[TempoChange(0, bpm)])
        clips.append(render(clip, sample_rate=MAA_SAMPLE_RATE, seconds=seconds))
    return clips


def time_paths(scorers: dict[str, MAAScorer], clips: list[np.ndarray], repeats: int, device: str) -> dict:
    """Best CPU and wall seconds per window of each scorer, repeats interleaved (same load for all)."""
    n_windows = len(clips)
    best = {name: [float("inf"), float("inf")] for name in scorers}
    for scorer in scorers.values():
        scorer.score(clips[:1], MAA_SAMPLE_RATE)  # warm-up: kernel selection, allocator
    for _ in range(repeats):
        for name, scorer in scorers.items():
            if device == "cuda":
                torch.cuda.synchronize()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            scorer.score(clips, MAA_SAMPLE_RATE)
            if device == "cuda":
                torch.cuda.synchronize()
            best[name][0] = min(best[name][0], (time.process_time() - cpu0) / n_windows)
            best[name][1] = min(best[name][1], (time.perf_counter() - wall0) / n_windows)
    return best


def embeddings(scorer: MAAScorer, clips: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Pooled (normalised) embeddings each head reads, per axis: (clips, dim). Heads swapped for Identity."""
    model = scorer.model
    heads = model.proj_layer
    model.proj_layer = torch.nn.ModuleDict({axis: torch.nn.Identity() for axis in AXES})
    try:
        parts = []
        for first in range(0, len(clips), 4):  # 4 windows at a time: bounded memory
            chunk = clips[first : first + 4]
            windows, masks = fill_windows(chunk, np.arange(len(chunk)), np.zeros(len(chunk), dtype=np.int64),
                                          np.array([min(len(c), WINDOW_SAMPLES) for c in chunk]))
            with torch.inference_mode():
                parts.append(scorer.window_forward({"wav": torch.from_numpy(windows).unsqueeze(1),
                                                    "mask": torch.from_numpy(masks).unsqueeze(1)}))
        return {axis: torch.cat([p[axis] for p in parts]).double().numpy() for axis in AXES}
    finally:
        model.proj_layer = heads


def own_head_scores(model, axis: str, embedding: np.ndarray) -> np.ndarray:
    """1–10 scores of single-window clips from their embeddings: the model's head, then its scaling."""
    with torch.inference_mode():
        raw = model.proj_layer[axis](torch.from_numpy(embedding).float()).squeeze(-1).double().numpy()
    t = model.target_transform[axis]
    return raw * float(t["std"]) + float(t["mean"])


def agreement(model, clips: list[np.ndarray], fast_precision: str | None = None,
              emb_exact: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Per-axis agreement rows of FastCPUForward at ``fast_precision`` with the exact path (see the module
    docstring); ``emb_exact``: the exact path's embeddings of ``clips``, when already computed."""
    fast = MAAScorer.from_model(model, device="cpu", exact=False, fast_precision=fast_precision)
    if fast.precision != "fast-cpu":
        raise SystemExit(f"fast CPU path unavailable: {fast.fast_reason}")
    if emb_exact is None:
        emb_exact = embeddings(MAAScorer.from_model(model, device="cpu", exact=True), clips)
    emb_fast = embeddings(fast, clips)
    rows = []
    for k, axis in enumerate(AXES):
        e, f = emb_exact[axis], emb_fast[axis]
        se, sf = own_head_scores(model, axis, e), own_head_scores(model, axis, f)
        centred = e - e.mean(axis=0)
        _, sing, vt = np.linalg.svd(centred, full_matrices=False)
        head = vt[k] / (sing[k] / np.sqrt(len(e)))  # exact scores along direction k: std 1 point
        rows.append({
            "axis": axis,
            "own_max_diff": float(np.max(np.abs(sf - se))),
            "own_spread": float(se.max() - se.min()),
            "calibrated_max_diff": float(np.max(np.abs((f - e) @ head))),
            "embedding_error_over_spread": float(np.sqrt(np.mean(np.sum((f - e) ** 2, axis=1)))
                                                 / np.sqrt(np.mean(np.sum(centred**2, axis=1)))),
        })
    return rows


def simulate_cpu_without_bf16() -> None:
    """Cap oneDNN/ATen at AVX2 (read when torch loads: re-executes this script once with them set) and hide
    the bf16 and AMX flags from the precision choice."""
    import engine.scorer as scorer

    caps = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    if any(os.environ.get(name) != value for name, value in caps.items()):
        os.environ.update(caps)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    flags = frozenset(f for f in cpu_flags() if f not in {"avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"})
    for module in (scorer, sys.modules[__name__]):
        module.cpu_flags = lambda: flags
        module.native_bf16 = lambda: False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("small", "full"), default="full", help="random-weight WavLM size")
    parser.add_argument("--maa", default=None, help="a real checkpoint.pt / HF directory instead of random weights")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--windows", type=int, default=4, help="10-s windows scored per timed run")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per path; the best is reported")
    parser.add_argument("--clips", type=int, default=32, help="rendered clips (≤ 10 s each) for the agreement check")
    parser.add_argument("--precisions", nargs="+", choices=FAST_CPU_PRECISIONS, default=None,
                        help="FastCPUForward precisions to compare with exact (default: this CPU's)")
    parser.add_argument("--as-cpu-without-bf16", action="store_true",
                        help="stand in for a laptop CPU: oneDNN and ATen capped at AVX2 (so bf16 is emulated) and the "
                             "precision chosen as on a CPU without bf16 instructions; fbgemm's int8 kernels cannot be "
                             "capped and keep this CPU's VNNI")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-agreement", action="store_true")
    args = parser.parse_args()
    if args.as_cpu_without_bf16:
        simulate_cpu_without_bf16()
    args.precisions = args.precisions or [default_fast_cpu_precision()]
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.maa:
        model = MAAScorer.load(args.maa, device="cpu", exact=True).model
        weights = args.maa
    else:
        model = build_maa_model(small=args.config == "small", seed=0)
        weights = f"random {args.config}-size weights (timing and agreement only, not real scores)"
    print(f"device={args.device} torch_threads={torch.get_num_threads()} cpus={os.cpu_count()} "
          f"load_avg_1min={load_average():.1f} weights: {weights}")
    if args.device == "cpu":
        flags = sorted({"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni"} & cpu_flags())
        if args.as_cpu_without_bf16:
            print("standing in for a CPU without bf16 instructions: oneDNN/ATen capped at AVX2, fbgemm uncapped")
        print(f"cpu: {cpu_model_name()} [{' '.join(flags) or 'no bf16/int8 matrix instructions'}]; "
              f"default fast precision here: {default_fast_cpu_precision()} (int8 convolutions in "
              f"{'bf16' if native_bf16() else 'float32: no bf16 instructions'})")

    clips = varied_music(max(args.clips, args.windows), seed=0)
    timing_clips = [c for c in clips if len(c) == WINDOW_SAMPLES][: args.windows]  # full windows only
    print(f"\n{'batch':>5} {'path':<14} {'cpu s/window':>12} {'wall s/window':>13} {'windows/s':>10} {'speed-up (cpu)':>15}")
    for batch_size in args.batch_sizes:
        if args.device == "cuda":
            scorers = {"bf16-autocast": MAAScorer.from_model(model, device="cuda", max_batch_size=batch_size)}
        else:
            scorers = {"exact": MAAScorer.from_model(model, device="cpu", max_batch_size=batch_size, exact=True)}
            for precision in args.precisions:
                scorers[f"fast {precision}"] = MAAScorer.from_model(
                    model, device="cpu", max_batch_size=batch_size, exact=False, fast_precision=precision)
                if scorers[f"fast {precision}"].fast_precision != precision:
                    raise SystemExit(f"fast CPU path unavailable: {scorers[f'fast {precision}'].fast_reason}")
        best = time_paths(scorers, timing_clips, args.repeats, args.device)
        base = best.get("exact", [float("nan")])[0]
        for name, (cpu, wall) in best.items():
            print(f"{batch_size:>5} {name:<14} {cpu:>12.3f} {wall:>13.3f} {1 / wall:>10.2f} {base / cpu:>14.2f}x", flush=True)
        model.to("cpu")
    print(f"load_avg_1min={load_average():.1f} after timing")
    if args.device == "cpu":
        # first call: building the path (weight conversion / packing) + one window, nothing cached
        for name in ("exact", *args.precisions):
            cpu0 = time.process_time()
            first = MAAScorer.from_model(model, device="cpu", exact=name == "exact",
                                         fast_precision=None if name == "exact" else name)
            first.score(timing_clips[:1], MAA_SAMPLE_RATE)
            print(f"first call ({name}): {time.process_time() - cpu0:.3f} CPU-s (build + one window)")

    if args.skip_agreement or args.device == "cuda":
        return
    emb_exact = embeddings(MAAScorer.from_model(model, device="cpu", exact=True), clips)
    for precision in args.precisions:
        rows = agreement(model, clips, precision, emb_exact)
        print(f"\nfast {precision}: agreement over {len(clips)} rendered clips "
              f"(1–10 scale; goal: max diff ≤ {GOAL_MAX_DIFF})")
        print(f"{'axis':<5} {'own heads: max diff':>20} {'spread':>8} {'calibrated heads: max diff':>27} "
              f"{'embedding error / spread':>25}")
        for r in rows:
            print(f"{r['axis']:<5} {r['own_max_diff']:>20.4f} {r['own_spread']:>8.4f} "
                  f"{r['calibrated_max_diff']:>27.4f} {r['embedding_error_over_spread']:>25.4f}", flush=True)
    print(f"load_avg_1min={load_average():.1f} at the end")


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
