"""`smart pretrain`: train the Phi-3 REMI base model on a prepared DATA_DIR (paper §3.1).

A plain nanoGPT-style loop on top of `accelerate` (so `accelerate launch` gives multi-GPU):

* examples are random crops of up to --seq-len tokens that start on a bar line (BOS when the crop
  holds the start of a piece, EOS when it holds its end); a batch runs as groups of equal length
  (`same_length_groups`), so nothing is padded and attention needs no mask;
* a share (--fim-rate) are bar-level fill-in-the-middle examples in exactly the format of
  `RemiTokenizer.infill_prompt` + middle + EOS, so one model both continues and infills;
* train crops are augmented on the fly (transposition ±5 semitones, tempo jitter);
* AdamW, gradient clipping, a warmup–stable–decay LR schedule (`Schedule`) stored with the run: the
  stable phase continues across runs, the decay is an explicit phase (often a branch, `--decay-from`);
* bf16 autocast where the hardware has it (`--precision auto`), threads chosen by measurement, a
  checkpoint at least every `--save-minutes`, a progress line with tokens/s, loss and ETA;
* continuation and infilling validation losses reported separately; JSONL + TensorBoard logs;
  atomic checkpoints that `--resume` continues from.

Run layout (OUT):
    log.jsonl                 one line per step ({"step", "loss", "lr", ...}) and per evaluation
    tb/                       TensorBoard events
    run_config.json           the arguments of the run
    checkpoints/step-NNNNNNN/ HF model dir (policy.save) + training_state.pt (optimizer, step, RNG)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from engine.cliutil import HelpFormatter, examples
from engine.errors import UserError
from engine.music import atomic_write_text
from training.data import TokenSplit, load_tokenizer
from training.examples import (ExampleBuilder, TrainSampler, collate, mean_loss, same_length_groups,
                               summed_loss, validation_examples)

if TYPE_CHECKING:  # torch and miditok load in the functions that use them: `smart pretrain --help` stays quick
    from engine.tokenizer import RemiTokenizer

TRAINING_STATE_FILE = "training_state.pt"
CHECKPOINTS = "checkpoints"
LOG_FILE = "log.jsonl"


# ---------------------------------------------------------------------------- schedule and checkpoints
@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule of a run, fixed when the run starts and kept in its checkpoints.

    ``wsd`` (warmup–stable–decay): linear warmup to `peak`, then constant — the stable phase, which
    can be continued across runs for as long as there is compute (`--resume --steps MORE`) — and,
    only once a decay is asked for (`--decay-steps`, or a branch with `--decay-from`), a 1−sqrt decay
    to `min_ratio * peak` over `decay_steps` steps from `decay_start` (Hägele et al. 2024: a short
    1−sqrt cooldown from any stable checkpoint matches a cosine schedule planned for that length).
    ``cosine``: the schedule of runs made before WSD (warmup, cosine to `min_ratio * peak` at `total`).
    `--resume` always continues with the schedule stored here, never one recomputed from new arguments.
    """

    peak: float
    warmup: int
    kind: str = "wsd"
    decay_start: int | None = None
    decay_steps: int = 0
    min_ratio: float = 0.1
    total: int = 0  # cosine only

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        if self.kind == "cosine":
            progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
            return self.peak * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        if self.decay_start is None or step < self.decay_start:
            return self.peak
        progress = min(1.0, (step - self.decay_start) / max(1, self.decay_steps))
        return self.peak * (self.min_ratio + (1 - self.min_ratio) * (1 - math.sqrt(progress)))

    def phase(self, step: int) -> str:
        if step < self.warmup:
            return "warmup"
        if self.kind == "cosine":
            return "cosine"
        return "stable" if self.decay_start is None or step < self.decay_start else "decay"

    @property
    def end(self) -> int | None:
        """The step the decay ends on (the run's natural end), or None in an open stable phase."""
        if self.kind == "cosine":
            return self.total
        return None if self.decay_start is None else self.decay_start + self.decay_steps

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        fields = {"peak", "warmup", "kind", "decay_start", "decay_steps", "min_ratio", "total"}
        return cls(**{k: v for k, v in d.items() if k in fields})


def learning_rate(step: int, peak: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """The legacy schedule: linear warmup to `peak`, then cosine decay to `min_ratio * peak` at `total`."""
    return Schedule(peak, warmup, kind="cosine", total=total, min_ratio=min_ratio).lr(step)


def checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (with their training state), oldest first."""
    root = out / CHECKPOINTS
    found = []
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith("step-") and (d / TRAINING_STATE_FILE).exists() and (d / "model.safetensors").exists():
                try:
                    found.append((int(d.name[5:]), d))
                except ValueError:
                    pass
    return sorted(found)


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    found = checkpoint_dirs(Path(out))
    return found[-1][1] if found else None


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def save_checkpoint(out: Path, step: int, policy, optimizer, rng: np.random.Generator, state: dict, keep: int) -> Path:
    """Write checkpoints/step-N atomically (a temp dir renamed into place) and prune old ones."""
    import torch
    root = out / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    for stale in root.glob(".tmp-step-*"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-step-{step:07d}-{os.getpid()}"
    policy.save(tmp)
    torch.save({
        **state,
        "step": step,
        "optimizer": optimizer.state_dict(),
        "numpy_rng": _rng_state(rng),
        "torch_rng": torch.get_rng_state(),
    }, tmp / TRAINING_STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _step, old in checkpoint_dirs(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_training_state(ckpt: Path) -> dict:
    import torch
    try:
        return torch.load(ckpt / TRAINING_STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read {ckpt / TRAINING_STATE_FILE}: {exc}") from None


def truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines after the resumed checkpoint, so a resumed run neither repeats nor skips steps."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if rec.get("step", 0) <= last_step:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))


# ---------------------------------------------------------------------------- the loop
def init_policy(model_dir: str, tok: RemiTokenizer):
    """Start from an existing model's weights (fine-tuning on one's own collection, or continuing a
    shipped model), in float32 whatever the stored dtype; the vocabularies must match exactly."""
    import torch
    from engine.policy import Policy, PolicyLoadError

    try:
        policy = Policy.load(model_dir, dtype=torch.float32)
    except PolicyLoadError as exc:
        raise UserError(f"--init-from: {exc}") from None
    if policy.tokenizer.vocab != tok.vocab:
        raise UserError(f"--init-from {model_dir}: its tokenizer differs from the one the data was prepared with")
    return policy


def prior_training(model_dir: str) -> dict:
    """What the --init-from model's card says about its own training (empty when it has no card)."""
    card = Path(model_dir) / "model_card.json"
    try:
        t = json.loads(card.read_text())["training"]
    except (OSError, ValueError, KeyError):
        return {"path": str(model_dir)}
    keys = ("step", "tokens_seen", "hours", "hardware", "batch_size", "seq_len", "lr", "stable_lr", "final_lr")
    return {"path": str(model_dir), **{k: t.get(k) for k in keys}}


def init_lr_cap(prior: dict) -> float | None:
    """The highest LR a run continuing this model may warm to: the LR of its stable phase where its card
    records one (a decayed model goes back to it, as WSD continues from a stable checkpoint), else the
    peak of the schedule it ended in. Warming above that undoes what the model learned at lower LRs."""
    for key in ("stable_lr", "lr"):
        value = prior.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def choose_precision(requested: str, cuda: bool) -> str:
    """'bf16' (autocast, float32 master weights) or 'no'. `auto` takes bf16 on CUDA cards that have it and
    on CPUs with native bf16 matrix instructions; elsewhere bf16 is emulated and slower than float32."""
    import torch
    from engine.cpu import native_bf16

    if requested == "float32":
        return "no"
    if requested == "bf16":
        return "bf16"
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if native_bf16() else "no"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_threads(step_seconds, candidates: list[int]) -> tuple[int, dict[int, float]]:
    """The thread count whose measured step time is lowest. `step_seconds(n)` times one step with n
    threads: more threads than free cores make every step wait for the slowest (measured: two threads on
    a loaded 2-core machine were slower than one)."""
    import torch
    timings = {}
    for n in candidates:
        torch.set_num_threads(n)
        step_seconds(n)  # warm-up: allocations, oneDNN kernel choice
        timings[n] = min(step_seconds(n) for _ in range(2))
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return best, timings


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def _source_run_checkpoint(decay_from: str) -> Path:
    ckpt = latest_checkpoint(decay_from)
    if ckpt is None:
        raise UserError(f"--decay-from {decay_from}: no checkpoint in {Path(decay_from) / CHECKPOINTS}")
    return ckpt


def train(args) -> dict:
    import torch
    from accelerate import Accelerator
    from transformers.utils import logging as hf_logging

    from engine.policy import Policy

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars would bury the log
    out = Path(args.out)
    cuda = torch.cuda.is_available()
    precision = choose_precision(args.precision, cuda)
    accelerator = Accelerator(mixed_precision=precision, cpu=not cuda)
    main_process = accelerator.is_main_process

    def say(message: str) -> None:
        if main_process and not args.quiet:
            print(f"pretrain: {message}", file=sys.stderr, flush=True)

    tok = load_tokenizer(args.data)
    train_split = TokenSplit(args.data, "train")
    val_split = TokenSplit(args.data, "val")
    builder = ExampleBuilder(tok, args.seq_len)
    sampler = TrainSampler(train_split, builder, args.fim_rate, augment=not args.no_augment)
    val_cont, val_fim = validation_examples(val_split, builder, args.eval_examples)

    step, tokens_seen, elapsed_before = 0, 0, 0.0
    ckpt = latest_checkpoint(out) if args.resume else None
    if args.resume and ckpt is None and main_process:
        print(f"pretrain: no checkpoint in {out / CHECKPOINTS}; starting from scratch", file=sys.stderr)
    source_config: dict = {}
    branching = ckpt is None and bool(args.decay_from)
    if branching:
        if checkpoint_dirs(out):
            raise UserError(f"{out} already holds a run; --decay-from starts a new one (or pass --resume)")
        ckpt = _source_run_checkpoint(args.decay_from)
        config_path = Path(args.decay_from) / "run_config.json"
        source_config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if ckpt is not None:
        state = load_training_state(ckpt)
        policy = Policy.load(ckpt, dtype=torch.float32)
        if policy.tokenizer.vocab != tok.vocab:
            raise UserError(f"checkpoint {ckpt} was trained with another tokenizer than {args.data}")
        step, tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
        elapsed_before = float(state.get("elapsed_seconds", 0.0))
        if "schedule" in state:
            schedule = Schedule.from_dict(state["schedule"])
        else:  # a run from before schedules were stored: the cosine its first arguments asked for
            schedule = Schedule(args.lr, args.warmup, kind="cosine", total=args.steps)
            say(f"{ckpt} holds no schedule; continuing the cosine of --lr {args.lr:g} over --steps {args.steps}")
        if branching or (args.decay_steps and schedule.kind == "wsd" and schedule.decay_start is None):
            if schedule.kind != "wsd":
                raise UserError("only a warmup-stable-decay run can be decayed")
            schedule = Schedule(schedule.peak, schedule.warmup, decay_start=max(step, schedule.warmup),
                                decay_steps=args.decay_steps, min_ratio=args.min_lr_ratio)
            say(f"decay phase: LR {schedule.peak:.2e} → {schedule.peak * schedule.min_ratio:.2e} "
                f"over steps {schedule.decay_start}–{schedule.end} (1−sqrt)")
        elif args.resume and (args.lr, args.warmup) != (schedule.peak, schedule.warmup):
            say(f"resuming with the run's own schedule (peak LR {schedule.peak:g}, {schedule.warmup} warmup "
                f"steps); --lr/--warmup apply to new runs only")
    else:
        if (out / LOG_FILE).exists() and checkpoint_dirs(out):
            raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        peak = args.lr
        if getattr(args, "init_from", None):
            policy = init_policy(args.init_from, tok)
            cap = init_lr_cap(prior_training(args.init_from))
            if cap is not None and peak > cap:
                say(f"--lr {peak:g} is above the LR {args.init_from} was trained at; warming to {cap:g} instead")
                peak = cap
        else:
            policy = Policy.create(args.config, tok, seed=args.seed)
        decay_steps = min(args.decay_steps, args.steps)
        schedule = Schedule(peak, args.warmup, decay_start=args.steps - decay_steps if decay_steps else None,
                            decay_steps=decay_steps, min_ratio=args.min_lr_ratio)
        state = None
    if schedule.kind == "wsd" and schedule.end is not None:
        args.steps = schedule.end  # a run with a decay ends with it
    model = policy.model
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr(step), betas=(0.9, 0.95), weight_decay=0.1)
    # Per-process data stream; restored exactly on resume.
    rng = np.random.default_rng([args.seed, accelerator.process_index])
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device

    if not cuda:
        if args.threads:
            torch.set_num_threads(args.threads)
        elif usable_cores() > 1:
            probe = collate(sampler.batch(np.random.default_rng(0), args.batch_size), tok.pad_id, args.seq_len)

            def step_seconds(_n: int) -> float:
                t0 = time.perf_counter()
                with accelerator.autocast():
                    loss = model(input_ids=probe[0].to(device), attention_mask=probe[1].to(device),
                                 labels=probe[2].to(device)).loss
                accelerator.backward(loss)
                optimizer.zero_grad(set_to_none=True)
                return time.perf_counter() - t0

            threads, timings = choose_threads(step_seconds, [1, usable_cores()])
            say("threads measured: " + ", ".join(f"{n}: {t:.2f} s/step" for n, t in timings.items())
                + f" → {threads}")
        else:
            torch.set_num_threads(1)
    say(f"precision {'bf16 autocast' if precision == 'bf16' else 'float32'}, {torch.get_num_threads()} thread(s), "
        f"batch {args.batch_size} × {args.seq_len} tokens, LR {schedule.kind} peak {schedule.peak:.2e}")

    writer = None
    log_path = out / LOG_FILE
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        truncate_log(log_path, step)
        run_config = {k: v for k, v in vars(args).items() if k != "func"}
        run_config["schedule"] = schedule.to_dict()
        run_config["precision"] = precision
        if state is None and getattr(args, "init_from", None):
            # The source directory may be overwritten later (e.g. by exporting this run over it),
            # so what it was is recorded now, for the model card.
            run_config["init_from_card"] = prior_training(args.init_from)
        elif branching:  # a decay branch carries the stable run's lineage
            for key in ("init_from", "init_from_card"):
                if key in source_config:
                    run_config[key] = source_config[key]
            run_config["decay_of"] = {"run": str(args.decay_from), "step": step}
        elif state is not None and (out / "run_config.json").exists():
            previous = json.loads((out / "run_config.json").read_text())
            for key in ("init_from", "init_from_card", "decay_of"):
                if key in previous and not run_config.get(key):
                    run_config[key] = previous[key]
        atomic_write_text(out / "run_config.json", json.dumps(run_config, indent=1))
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"), purge_step=step + 1 if step else None)
        except Exception as exc:  # TensorBoard is a nicety; the JSONL log is the record
            print(f"pretrain: TensorBoard disabled ({exc})", file=sys.stderr)
    log_file = open(log_path, "a") if main_process else None

    def log(rec: dict) -> None:
        if not main_process:
            return
        log_file.write(json.dumps(rec) + "\n")
        log_file.flush()
        if writer is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)):
                    writer.add_scalar(k, v, rec["step"])

    def evaluate() -> dict:
        unwrapped = accelerator.unwrap_model(model)
        with accelerator.autocast():
            cont, n_cont = mean_loss(unwrapped, val_cont, tok, args.seq_len, args.batch_size, device, True)
            infill, n_fim = mean_loss(unwrapped, val_fim, tok, args.seq_len, args.batch_size, device, False)
        return {"val_loss_continuation": round(cont, 5), "val_loss_infill": round(infill, 5),
                "val_tokens_continuation": n_cont, "val_tokens_infill": n_fim}

    def checkpoint() -> None:
        if main_process:
            unwrapped = accelerator.unwrap_model(model)
            save_checkpoint(out, step, Policy(unwrapped, tok), optimizer, rng, {
                "tokens_seen": tokens_seen, "elapsed_seconds": elapsed_before + time.time() - started,
                "config": args.config, "seq_len": args.seq_len, "schedule": schedule.to_dict(),
                "lr": schedule.lr(max(0, step - 1)), "precision": precision}, keep=args.keep)
            unwrapped.train()
        accelerator.wait_for_everyone()

    # SIGTERM / SIGINT (Ctrl+C) end the run after the step in progress, with a checkpoint: a long run
    # can be stopped at any moment and `--resume` goes on from exactly there.
    stop_requested = []
    previous_handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous_handlers[sig] = signal.signal(sig, lambda *_: stop_requested.append(True))
    started = time.time()
    first_step, tokens_at_start = step, tokens_seen
    last_save = last_report = time.time()
    recent_losses: list[float] = []
    last: dict = {}
    stop_after = step + args.stop_after if args.stop_after else None
    while step < args.steps:
        lr = schedule.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        examples = sampler.batch(rng, args.batch_size)
        # One step = the token-weighted mean loss of the batch, accumulated over equal-length groups.
        groups = same_length_groups(examples, args.seq_len, args.batch_size)
        targets = sum(min(len(e.ids), args.seq_len) - 1 for e in examples)
        loss = 0.0
        for group in groups:
            with accelerator.autocast():
                group_total, _ = summed_loss(model, group, tok, args.seq_len, device)
            accelerator.backward(group_total / targets)
            loss += float(group_total.detach()) / targets
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += sum(min(len(e.ids), args.seq_len) for e in examples) * accelerator.num_processes
        last = {"step": step, "loss": round(loss, 5), "lr": lr,
                "grad_norm": round(float(grad_norm), 4), "tokens_seen": tokens_seen,
                "fim_share": round(sum(e.kind == "infill" for e in examples) / len(examples), 3),
                "elapsed_seconds": round(elapsed_before + time.time() - started, 1)}
        recent_losses.append(last["loss"])
        if args.eval_every and (step % args.eval_every == 0 or step == args.steps):
            last.update(evaluate())
        log(last)
        now = time.time()
        if now - last_report >= args.report_seconds or step == args.steps or "val_loss_continuation" in last:
            ran = now - started
            rate = (tokens_seen - tokens_at_start) / max(ran, 1e-9)
            eta = (args.steps - step) * ran / max(1, step - first_step)
            val = (f" · val {last['val_loss_continuation']:.4f}/{last['val_loss_infill']:.4f}"
                   if "val_loss_continuation" in last else "")
            say(f"step {step}/{args.steps} ({schedule.phase(step - 1)}, lr {lr:.2e}) · loss "
                f"{sum(recent_losses) / len(recent_losses):.4f} (mean of {len(recent_losses)}){val} · "
                f"{rate:,.0f} tokens/s · {tokens_seen - tokens_at_start:,} tokens this run · ETA {_duration(eta)}")
            recent_losses.clear()
            last_report = now
        if (step % args.save_every == 0 or step == args.steps
                or (args.save_minutes and now - last_save >= 60 * args.save_minutes)):
            checkpoint()
            last_save = time.time()
        if step == stop_after:
            break  # like a kill: whatever was logged after the last checkpoint is redone on --resume
        if stop_requested:
            if step % args.save_every and step != args.steps:
                checkpoint()
            say(f"stopped at step {step} on request; `--resume` continues from here")
            break
    for sig, handler in previous_handlers.items():
        signal.signal(sig, handler)
    if log_file:
        log_file.close()
    if writer is not None:
        writer.close()
    return {"step": step, "tokens_seen": tokens_seen, "out": str(out), **{k: v for k, v in last.items() if k.startswith("val_")},
            "loss": last.get("loss")}


# ---------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pretrain the Phi-3 base model on prepared data (continuation + bar infilling)",
        description="Train the REMI Phi-3 base model on a DATA_DIR made by `smart prepare-data`.",
        formatter_class=HelpFormatter,
        epilog=examples("smart pretrain --data data/piano --out runs/base --steps 20000",
                        "smart pretrain --data data/piano --out runs/base --resume"))
    p.add_argument("--data", required=True, metavar="DATA_DIR", help="prepared data (`smart prepare-data --out`)")
    p.add_argument("--config", choices=["paper", "tiny"], default="paper",
                   help="model size: paper (the SMART paper's Phi-3) or tiny (quick trials and tests)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (logs and checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out, with the "
                   "schedule that run started with (a larger --steps extends its stable phase)")
    p.add_argument("--init-from", metavar="MODEL_DIR", help="start from this model's weights instead of random "
                   "ones (same tokenizer); the optimizer starts fresh and the LR never warms above the one the "
                   "model was trained at (its card's stable or peak LR)")
    p.add_argument("--steps", type=int, default=20000, help="optimizer steps to train to (stable phase: can be "
                   "raised on --resume)")
    p.add_argument("--decay-steps", type=int, default=0, help="end with a 1-sqrt LR decay over this many steps "
                   "(0: stay in the stable phase; with --resume, the decay starts now)")
    p.add_argument("--decay-from", metavar="RUN_DIR", help="start --out as the decay branch of RUN_DIR's latest "
                   "checkpoint (RUN_DIR's stable phase stays resumable); needs --decay-steps")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="LR at the end of the decay, as a share of the peak")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per optimizer step")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per training sequence (the model's context is 2,048)")
    p.add_argument("--lr", type=float, default=6e-4, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=200, help="warmup steps")
    p.add_argument("--grad-clip", type=float, default=1.0, help="largest gradient norm (larger ones are scaled down)")
    p.add_argument("--fim-rate", type=float, default=0.25, help="share of bar-infilling examples")
    p.add_argument("--eval-every", type=int, default=500, help="validation every N steps (0: never)")
    p.add_argument("--eval-examples", type=int, default=64, help="validation examples per kind")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps")
    p.add_argument("--save-minutes", type=float, default=10.0, help="also checkpoint whenever this many minutes "
                   "have passed since the last one (0: steps only)")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept (oldest deleted)")
    p.add_argument("--seed", type=int, default=0, help="random seed (initial weights, example order, augmentation)")
    p.add_argument("--precision", choices=["auto", "float32", "bf16"], default="auto",
                   help="auto: bf16 autocast (float32 master weights) on CUDA and on CPUs with native bf16 "
                   "instructions (AVX512-BF16, AMX), float32 elsewhere")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 measures 1 against all usable cores "
                   "on a few steps and keeps the faster (pin a long run: taskset -c 0 … --threads 1)")
    p.add_argument("--no-augment", action="store_true", help="no transposition / tempo jitter")
    p.add_argument("--report-seconds", type=float, default=60.0, help="a progress line (tokens/s, loss, ETA) "
                   "at most this often")
    p.add_argument("--stop-after", type=int, default=0, help=argparse.SUPPRESS)  # tests: simulate a kill
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args) -> int:
    for name in ("steps", "batch_size", "save_every"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.fim_rate <= 1:
        raise UserError("--fim-rate must be between 0 and 1")
    if args.decay_steps < 0 or not 0 <= args.min_lr_ratio <= 1:
        raise UserError("--decay-steps must be at least 0 and --min-lr-ratio between 0 and 1")
    if args.decay_from and not args.decay_steps:
        raise UserError("--decay-from needs --decay-steps (how long the decay lasts)")
    if args.decay_from and args.init_from:
        raise UserError("--decay-from and --init-from both name where to start: pick one")
    result = train(args)
    print(json.dumps(result))
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pretrain")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"pretrain: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
