"""MAA scoring throughput (10-s windows per second) with random weights: timing only.

    uv run python benchmarks/bench_maa.py                      # small + full, batch sizes 1 and 4, CPU
    uv run python benchmarks/bench_maa.py --configs full --batch-sizes 1 2 8 --windows 16 --device cuda

Each clip is exactly one 10-s window at 16 kHz, so windows/s is also clips/s for 10-s clips; a
minute of rendered audio costs 6 windows. Wall time and process CPU time are both printed: on a
shared machine the CPU figure is the steadier one.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from engine.scorer import MAA_SAMPLE_RATE, WINDOW_SAMPLES, MAAScorer, build_maa_model


def bench(config: str, batch_size: int, n_windows: int, device: str, repeats: int) -> dict:
    model = build_maa_model(small=(config == "small"), seed=0)
    scorer = MAAScorer.from_model(model, device=device, max_batch_size=batch_size)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(WINDOW_SAMPLES)).astype(np.float32) for _ in range(n_windows)]
    scorer.score(clips[:batch_size], MAA_SAMPLE_RATE)  # warm-up: kernel selection, allocator
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        scorer.score(clips, MAA_SAMPLE_RATE)
        if device == "cuda":
            torch.cuda.synchronize()
        best_wall = min(best_wall, time.perf_counter() - wall0)
        best_cpu = min(best_cpu, time.process_time() - cpu0)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "config": config,
        "params": n_params,
        "batch": batch_size,
        "windows": n_windows,
        "wall_s": best_wall,
        "cpu_s": best_cpu,
        "windows_per_s": n_windows / best_wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=("small", "full"), default=["small", "full"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--windows", type=int, default=8, help="windows scored per timed run")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs; the best is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"device={args.device} torch_threads={torch.get_num_threads()} cpus={os.cpu_count()} "
        f"load_avg_1min={load:.1f} precision={'bf16 autocast' if args.device == 'cuda' else 'fp32'}"
    )
    print(
        f"{'config':<6} {'params':>11} {'batch':>5} {'windows':>7} {'wall s':>8} {'cpu s':>8} {'windows/s':>10} {'win/cpu-s':>10} {'audio x realtime':>16}"
    )
    for config in args.configs:
        for batch_size in args.batch_sizes:
            r = bench(config, batch_size, args.windows, args.device, args.repeats)
            print(
                f"{r['config']:<6} {r['params']:>11,} {r['batch']:>5} {r['windows']:>7} {r['wall_s']:>8.2f} "
                f"{r['cpu_s']:>8.2f} {r['windows_per_s']:>10.2f} {r['windows'] / r['cpu_s']:>10.2f} {r['windows_per_s'] * 10:>15.1f}x",
                flush=True,
            )
    if hasattr(os, "getloadavg"):
        import resource

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        print(f"peak RSS of this process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
