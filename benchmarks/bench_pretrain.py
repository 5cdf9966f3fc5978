"""Pretraining throughput on this CPU: float32 vs bf16 autocast, 1 thread vs all usable cores.

One optimizer step = forward + backward + AdamW step of the paper-shaped Phi-3 (the shipped model's
architecture, random weights) on `--batch` rows of `--seq-len` tokens, as `smart pretrain` runs it
(accelerate's autocast, float32 master weights). Every configuration runs in this one process, in
alternating rounds so the ratios see the same machine state; the load seen before and after is printed.

    uv run python benchmarks/bench_pretrain.py [--seq-len 2048] [--batch 2] [--rounds 3] [--smoke]

Prints tokens per second (wall) and per CPU-second for each (precision, threads) and the ratio bf16/float32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from engine.cpu import native_bf16  # noqa: E402
from engine.policy import Policy  # noqa: E402
from training.pretrain import usable_cores  # noqa: E402


def one_step(model, optimizer, ids, precision: str) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    p.add_argument("--smoke", action="store_true", help="tiny model, one short round (checks the script runs)")
    args = p.parse_args(argv)
    if args.smoke:
        args.seq_len, args.batch, args.rounds = 64, 1, 1
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), usable cores {usable_cores()}, "
          f"native bf16: {native_bf16()}, torch {torch.__version__}")
    policy = Policy.create("tiny" if args.smoke else "paper", seed=0)
    model = policy.model.float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (args.batch, args.seq_len), generator=gen)
    configs = [(prec, n) for prec in ("float32", "bf16") for n in sorted({1, usable_cores()})]
    wall: dict = {c: [] for c in configs}
    cpu: dict = {c: [] for c in configs}
    for prec, n in configs:  # warm-up: oneDNN picks its kernels per shape and thread count
        torch.set_num_threads(n)
        one_step(model, optimizer, ids, prec)
    for _ in range(args.rounds):
        for c in configs:
            torch.set_num_threads(c[1])
            t0, c0 = time.perf_counter(), time.process_time()
            one_step(model, optimizer, ids, c[0])
            wall[c].append(time.perf_counter() - t0)
            cpu[c].append(time.process_time() - c0)
    tokens = args.batch * args.seq_len
    print(f"{'precision':<9} {'threads':>7} {'tokens/s':>9} {'tokens/CPU-s':>12}  (median of {args.rounds} steps "
          f"of {args.batch} x {args.seq_len} tokens)")
    rates = {}
    for c in configs:
        w = sorted(wall[c])[len(wall[c]) // 2]
        u = sorted(cpu[c])[len(cpu[c]) // 2]
        rates[c] = tokens / w
        print(f"{c[0]:<9} {c[1]:>7} {tokens / w:>9.0f} {tokens / u:>12.0f}")
    for n in sorted({1, usable_cores()}):
        print(f"bf16 / float32 at {n} thread(s): {rates[('bf16', n)] / rates[('float32', n)]:.2f}x")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
