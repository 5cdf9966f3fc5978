"""Load test of the policy host: C concurrent clients × R generation requests each.

    uv run python benchmarks/bench_host_load.py                      # 20 × 5 on a fresh tiny model
    uv run python benchmarks/bench_host_load.py --model resources/models/default --device cuda
    uv run python benchmarks/bench_host_load.py --url http://gpu-box:8765 --token T

Starts `smart serve` as a subprocess on 127.0.0.1 (unless --url), fires the requests (half continue
a prompt, half procedural), and prints errors, latency p50/p95/max, throughput and the scheduler's
batching figures (mean rows per decode step, most requests decoded together). With --baseline it
first runs the same number of requests from a single client, one after another.

Before/after in one run: `--before DIR` first loads a host started from another checkout of the code
(e.g. `git archive HEAD | tar -x -C /tmp/before`), then this one, with the same model and load, and
prints the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.host_client import HostClient, HostError, LocalHost  # noqa: E402
from engine.music import Clip, Note  # noqa: E402


def prompt_midi() -> bytes:
    pitches = [60, 64, 67, 72, 62, 65, 69, 74, 64, 67, 71, 76, 60, 64, 67, 72]
    return Clip([Note(i * 480, p, 400, 80) for i, p in enumerate(pitches)], ppq=480).to_midi_bytes()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_load(client: HostClient, clients: int, requests: int, args) -> dict:
    midi = prompt_midi()
    latencies: list[float] = []
    errors: list[str] = []
    notes = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker(k: int) -> None:
        barrier.wait()
        for r in range(requests):
            t0 = time.perf_counter()
            try:
                with client.generate(midi if (k + r) % 2 else None, candidates=args.candidates, bars=args.bars,
                                     max_new_tokens=args.max_new_tokens, seed=k * 1000 + r,
                                     score=args.score) as stream:
                    result = stream.wait()
                if len(result["candidates"]) != args.candidates:
                    raise HostError(f"{len(result['candidates'])} candidates instead of {args.candidates}")
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    notes[0] += sum(c["notes"] for c in result["candidates"])
            except Exception as exc:  # counted and reported, the load goes on
                with lock:
                    errors.append(f"client {k} request {r}: {exc}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": clients * requests, "errors": len(errors), "error_samples": errors[:3],
            "wall_s": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 3),
            "notes_per_s": round(notes[0] / wall, 1),
            "p50_s": round(percentile(latencies, 0.50), 3) if latencies else None,
            "p95_s": round(percentile(latencies, 0.95), 3) if latencies else None,
            "max_s": round(max(latencies), 3) if latencies else None,
            "mean_s": round(statistics.fmean(latencies), 3) if latencies else None}


@contextlib.contextmanager
def started_host(args, model: str, code_dir: Path | None):
    """A `smart serve` subprocess (from `code_dir`'s code when given) and a client; or the --url host."""
    if args.url is not None:
        with HostClient(args.url, args.token, timeout=120) as client:
            yield client
        return
    cwd = os.getcwd()
    if code_dir is not None:
        os.chdir(code_dir)  # `python -m engine.cli serve` imports the engine from the working directory
    try:
        local = LocalHost(model, device=args.device,
                          extra_args=["--max-batch-rows", str(args.max_batch_rows)]).start()
    finally:
        os.chdir(cwd)
    try:
        with local.client(timeout=120) as client:
            yield client
    finally:
        local.stop()


def measure(client: HostClient, args) -> dict:
    health = client.health()
    print(f"host: device {health['device']}, model {health['model']['path']} "
          f"({health['model']['parameters']:,} parameters), MAA {health['maa']['status']}")
    # One request first so start-up costs (lazy imports, allocator) are not in the figures.
    client.generate(None, candidates=1, bars=1, max_new_tokens=8, score=args.score).wait()
    if args.baseline:
        base = run_load(client, 1, args.clients * args.requests, args)
        print("one client, sequential:", json.dumps(base))
    before = client.health()["decode"]
    result = run_load(client, args.clients, args.requests, args)
    after = client.health()["decode"]
    steps = after["steps"] - before["steps"]
    result["decode_steps"] = steps
    result["mean_rows_per_step"] = round((after["row_steps"] - before["row_steps"]) / steps, 2) if steps else 0
    result["max_requests_in_one_batch"] = after["max_jobs"]
    result["joins"] = after["joins"] - before["joins"]
    for key in ("prefill_rows", "reused_rows"):  # prompt windows computed vs reused (cache, twin rows)
        if key in after:
            result[key] = after[key] - before[key]
    # The scheduler thread's time: decode steps (with sampling), joining requests into the batch.
    for key in ("step_s", "admit_s"):
        result["scheduler_" + key] = round(after[key] - before[key], 2)
    result["ms_per_step"] = round(1000 * (after["step_s"] - before["step_s"]) / steps, 2) if steps else 0
    print("concurrent:", json.dumps(result))
    print(f"errors {result['errors']}  p50 {result['p50_s']} s  p95 {result['p95_s']} s  "
          f"max {result['max_s']} s  throughput {result['requests_per_s']} req/s  "
          f"mean batch {result['mean_rows_per_step']} rows/step  admit {result['scheduler_admit_s']} s")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=5, help="requests per client")
    p.add_argument("--candidates", type=int, default=2)
    p.add_argument("--bars", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--score", action="store_true", help="also render + MAA-score every candidate")
    p.add_argument("--model", default=None, help="model directory (default: a fresh random tiny model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-batch-rows", type=int, default=64)
    p.add_argument("--url", default=None, help="load an already running host instead of starting one")
    p.add_argument("--token", default=None)
    p.add_argument("--baseline", action="store_true", help="first run the same requests from one client")
    p.add_argument("--before", type=Path, default=None,
                   help="another checkout of the code: measure its host first, then this one, and print ratios")
    p.add_argument("--rounds", type=int, default=1, help="with --before: alternate before/after this many times "
                   "(a busy machine's load drifts; the ratios use the medians)")
    args = p.parse_args()
    print(f"load: {args.clients} clients × {args.requests} requests, {args.candidates} candidates, "
          f"{args.bars} bars, ≤{args.max_new_tokens} tokens, score={args.score}")

    with tempfile.TemporaryDirectory(prefix="bench-host-") as tmp:
        model = args.model
        if model is None and args.url is None:
            from engine.policy import Policy

            model = str(Path(tmp) / "tiny")
            Policy.create("tiny").save(model)
        model = str(Path(model).resolve()) if model is not None else None
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        hosts = ([("before", args.before.resolve())] if args.before else []) + [("after", None)]
        for k in range(args.rounds if args.before else 1):
            for label, code in hosts:
                print(f"--- {label} (round {k + 1}): {code or ROOT}")
                with started_host(args, model, code) as client:
                    runs[label].append(measure(client, args))
        keys = ("p50_s", "p95_s", "max_s", "mean_s", "requests_per_s", "scheduler_admit_s")
        med = {label: {k: statistics.median(r[k] for r in rs) for k in keys} for label, rs in runs.items() if rs}
        for label, m in med.items():
            print(f"{label} (median of {len(runs[label])}): " + "  ".join(f"{k} {v}" for k, v in m.items())
                  + f"  errors {sum(r['errors'] for r in runs[label])}")
        if runs["before"]:
            b, a = med["before"], med["after"]
            print("ratios before/after: " + "  ".join(f"{k} {b[k] / a[k]:.2f}×" for k in keys[:4] if b[k] and a[k])
                  + f"  throughput after/before {a['requests_per_s'] / b['requests_per_s']:.2f}×")
        return 1 if any(r["errors"] for rs in runs.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
