"""SMART fine-tuning: TRL `GRPOTrainer` on audio-aesthetic (or symbolic) rewards.

The API the policy host's job process (`training.host_job`) and `smart grpo` use (the studio reaches it
only through the host's HTTP jobs):

    from training.grpo import GRPORunConfig, run_grpo
    result = run_grpo(GRPORunConfig(model="resources/models/default", out_dir="runs/smart"),
                      on_event=print, should_stop=lambda: False)

`run_grpo` is meant to run in its own process (the host streams `OUT/events.jsonl`); `on_event`
gets every step record (the same dicts as the JSONL lines) plus `{"event": "checkpoint" | "guard" |
"done", ...}` notices; `should_stop()` is polled after every step (a file `OUT/STOP` does the same
from outside, which also works under `accelerate launch`). A stopped run still writes its final
model and run card.

Paper defaults (§3.5, preset "paper"): 8 procedural prompts × 8 completions per iteration,
temperature 1.0, completions up to 256 tokens, reward = MAA content enjoyment of the first 10 s of
the SoundFont render, β = 0.04 (KL to the frozen reference), lr 1e-4 decaying linearly to 0 over
200 iterations, group-normalized advantages (TRL `scale_rewards="group"`), one optimizer step per
iteration.

Output directory:
    run_config.json        the full configuration (used by --resume)
    events.jsonl           one JSON object per step (see `STEP_FIELDS`)
    tensorboard/           the same scalars for TensorBoard
    checkpoints/checkpoint-N/   Trainer checkpoints; each is also a loadable Policy directory
                           (safetensors + config + REMI tokenizer) and is complete when it holds
                           `smart_checkpoint.json` (written last)
    final/                 the final Policy directory (rolled back by the diversity guard if it fired)
    run_card.json, README.md   configuration, reward-curve summary, versions
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.api import CHECKPOINT_DIR, CHECKPOINT_MARKER, MAA_AXES, STOP_FILE, GRPOOptions, complete_checkpoints
from engine.api import PRESETS as OPTION_PRESETS
from engine.api import option_values, options_with_preset, validate_grpo_options
from engine.api import DEFAULT_TEMPERATURE_FACTORS
from engine.errors import UserError
from engine.music import atomic_write_text
from training.guards import DiversityGuard, DriftGuard
from training.rollouts import StudioSampler, make_trainer_class

# The fields every step record carries (others are added when available).
STEP_FIELDS = ("step", "reward_mean", "reward_std", "kl", "completion_tokens", "diversity", "elapsed_s")
MAA_FIELDS = MAA_AXES


# ---------------------------------------------------------------------------- configuration
@dataclass
class GRPORunConfig(GRPOOptions):
    """Every option of a SMART GRPO run: what the user chooses (`engine.api.GRPOOptions`, with its
    types, bounds and the paper's defaults) plus where the run lives and whether it resumes."""

    out_dir: str = ""
    resume: bool = False

    def validate(self) -> None:
        if not self.model:
            raise UserError("no model directory given (--model DIR)")
        if not self.out_dir:
            raise UserError("no output directory given (--out DIR)")
        validate_grpo_options(option_values(self))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GRPORunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_preset(cls, preset: str = "paper", **overrides) -> "GRPORunConfig":
        return cls(**options_with_preset(preset, overrides))


# Each preset's option values (descriptions: engine.api.PRESETS).
PRESETS: dict[str, dict[str, Any]] = {name: dict(p.options) for name, p in OPTION_PRESETS.items()}


@dataclass
class GRPOResult:
    out_dir: str
    final_model: str | None
    steps_done: int
    stopped_by: str  # completed | stopped | diversity_guard
    rolled_back_to: int | None = None  # step whose weights became the final model (guard rollback)
    reward_first: float | None = None
    reward_last: float | None = None
    events: str = ""
    run_card: str = ""
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- run directory helpers
def read_events(path: str | Path) -> list[dict]:
    """Step records of an events.jsonl (a torn last line from a kill is skipped)."""
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_events(path: str | Path, last_step: int) -> int:
    """Keep one record per step ≤ last_step (the latest of duplicates); returns how many remain."""
    path = Path(path)
    by_step: dict[int, dict] = {}
    for rec in read_events(path):
        step = rec.get("step")
        if isinstance(step, int) and step <= last_step:
            by_step[step] = rec
    kept = [by_step[s] for s in sorted(by_step)]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return len(kept)


def _project_version() -> str:
    try:
        from importlib.metadata import version

        return version("smart-studio")
    except Exception:  # not installed as a distribution (running from a checkout)
        try:
            import tomllib

            root = Path(__file__).resolve().parent.parent
            return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
        except Exception:
            return "unknown"


def _make_callbacks(run: "_Run"):
    from transformers import TrainerCallback

    class SmartCallback(TrainerCallback):
        """events.jsonl + TensorBoard + stop flag + diversity guard + checkpoint completion markers."""

        def on_step_begin(self, args, state, control, **kwargs):
            run.step_started = time.perf_counter()
            if run.guard is not None and run.is_main and run.track_snapshots:
                # The weights that generate this step's batch: the state a rollback would return to.
                model = kwargs.get("model")
                if model is not None:
                    run.pending_snapshot = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

        def on_step_end(self, args, state, control, **kwargs):
            trainer = run.trainer
            if trainer is not None:
                total = time.perf_counter() - run.step_started
                times = dict(trainer.phase_times)
                trainer.phase_times.clear()
                gen, rew = times.get("generate_s", 0.0), times.get("reward_s", 0.0)
                calls = dict(trainer.rollout_calls)
                trainer.rollout_calls.clear()
                run.generated_by = "+".join(sorted(calls)) or "none"
                # "studio": the loss scored log q of the studio's sampler (training.rollouts); "trl": TRL's own.
                run.scored_by = "studio" if trainer.studio_logp_calls else "trl"
                trainer.studio_logp_calls = 0
                run.step_times = {"time_generate_s": gen, "time_reward_s": rew,
                                  "time_render_s": times.get("render_s", 0.0), "time_score_s": times.get("score_s", 0.0),
                                  "time_update_s": max(total - gen - rew, 0.0), "step_s": total}
            if run.should_stop is not None and run.should_stop():
                run.stopped_by = "stopped"
                control.should_training_stop = True
            if (Path(run.config.out_dir) / STOP_FILE).exists():
                run.stopped_by = "stopped"
                control.should_training_stop = True
            if control.should_training_stop and args.save_strategy != "no":
                control.should_save = True  # a stopped run keeps a resumable checkpoint

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs:
                return  # the end-of-training summary, not a step
            rec = run.step_record(state.global_step, logs)
            if run.guard is not None:
                event = run.guard.observe(rec["step"], rec.get("diversity"))
                if run.guard.baseline is not None:
                    rec["diversity_floor"] = run.guard.floor
                if run.pending_snapshot is not None and run.guard.above_floor(rec.get("diversity")):
                    if run.best is None or rec["reward_mean"] > run.best["reward_mean"]:
                        # Rewards of step N were earned by the weights before update N.
                        run.best = {"step": rec["step"] - 1, "reward_mean": rec["reward_mean"],
                                    "diversity": rec.get("diversity"), "state": run.pending_snapshot}
                run.pending_snapshot = None
                if event is not None:
                    event["action"] = run.config.guard_action
                    rec["guard"] = event
                    run.stopped_by = "diversity_guard"
                    control.should_training_stop = True
                    if args.save_strategy != "no":
                        control.should_save = True
            drift_event = run.drift_guard.observe(rec["step"], rec.get("drift")) if run.drift_guard else None
            if run.drift_guard is not None:
                rec["drift_threshold"] = run.drift_guard.threshold
            if drift_event is not None:
                drift_event["action"] = run.config.drift_action
                drift_event["shifts"] = rec.get("drift_shifts", {})
                rec["drift_guard"] = drift_event
                if run.config.drift_action == "stop":
                    run.stopped_by = "drift_guard"
                    control.should_training_stop = True
                    if args.save_strategy != "no":
                        control.should_save = True
            run.last_record = rec
            if run.is_main:
                run.write_event(rec)
                if "guard" in rec:
                    run.emit({"event": "guard", **rec["guard"]})
                if "drift_guard" in rec:
                    run.emit({"event": "guard", "kind": "drift", **rec["drift_guard"]})

        def on_save(self, args, state, control, **kwargs):
            step = state.global_step
            ckpt = Path(args.output_dir) / f"checkpoint-{step}"
            if run.is_main and ckpt.is_dir():
                run.tokenizer.save(ckpt)  # makes it a Policy directory (REMI config + HF tokenizer)
                rec = run.last_record or {}
                info = {"step": step, "elapsed_s": run.elapsed(), "reward_mean": rec.get("reward_mean"),
                        "diversity": rec.get("diversity"),
                        "guard_baseline": run.guard.baseline if run.guard is not None else None}
                atomic_write_text(ckpt / CHECKPOINT_MARKER, json.dumps(info))  # last: the checkpoint is complete
                run.emit({"event": "checkpoint", "step": step, "path": str(ckpt)})

    return SmartCallback()


class _Run:
    """State shared by the callbacks of one run."""

    def __init__(self, config: GRPORunConfig, tokenizer, on_event, should_stop, is_main: bool):
        self.config = config
        self.tokenizer = tokenizer
        self.on_event = on_event
        self.should_stop = should_stop
        self.is_main = is_main
        self.trainer = None
        self.step_started = time.perf_counter()
        self.step_times: dict = {}
        self.generated_by: str | None = None
        self.scored_by: str | None = None
        self.started = time.perf_counter()
        self.elapsed_offset = 0.0
        self.stopped_by = "completed"
        self.guard = DiversityGuard(config.min_diversity, config.guard_window) if config.min_diversity else None
        self.drift_guard = DriftGuard(config.max_drift, config.guard_window) if config.max_drift else None
        self.track_snapshots = config.guard_action == "rollback"
        self.pending_snapshot = None
        self.best: dict | None = None
        self.last_record: dict | None = None
        self.events_path = Path(config.out_dir) / "events.jsonl"
        self.tb = None
        self.maa_random = False

    def elapsed(self) -> float:
        return self.elapsed_offset + time.perf_counter() - self.started

    def step_record(self, step: int, logs: dict) -> dict:
        def get(key):
            v = logs.get(key)
            return float(v) if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else None

        rec: dict[str, Any] = {
            "step": int(step),
            "reward_mean": get("reward"),
            "reward_std": get("reward_std"),
            "kl": get("kl"),
            "completion_tokens": get("completions/mean_length"),
            "diversity": get("diversity/pairwise_distance"),
            "diversity_entropy": get("diversity/roll_entropy"),
            "unique_fraction": get("diversity/unique_fraction"),
            "notes_10s": get("music/notes_10s"),
            "silent_fraction": get("music/silent_fraction"),
            "loss": get("loss"),
            "grad_norm": get("grad_norm"),
            "lr": get("learning_rate"),
            "entropy": get("entropy"),
            "clipped_ratio": get("completions/clipped_ratio"),
            "frac_reward_zero_std": get("frac_reward_zero_std"),
            "truncated_share": get("music/truncated_share"),
            "drift": get("drift/distance"),
        }
        shifts = {k.split("/", 2)[2]: round(float(v), 4) for k, v in logs.items()
                  if k.startswith("drift/shift/") and isinstance(v, (int, float))}
        if shifts:
            rec["drift_shifts"] = shifts  # per feature, in base standard deviations: why the distance moved
        for axis in MAA_FIELDS:
            v = get(f"maa/{axis}")
            if v is not None:
                rec[axis] = v
        if any(a in rec for a in MAA_FIELDS) and self.maa_random:
            rec["maa_random"] = True  # random-weight MAA: plumbing only, not aesthetic scores
        for k, v in logs.items():
            if k.startswith("rewards/") and k.endswith("/mean") and isinstance(v, (int, float)):
                rec["reward_" + k.split("/")[1]] = float(v)
        rec.update({k: round(v, 4) for k, v in self.step_times.items()})
        if self.generated_by is not None:
            rec["generated_by"] = self.generated_by
            rec["scored_by"] = self.scored_by
        rec["elapsed_s"] = round(self.elapsed(), 3)
        return rec

    def write_event(self, rec: dict) -> None:
        with open(self.events_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"smart/{k}", v, rec["step"])
            self.tb.flush()
        self.emit(rec)

    def emit(self, event: dict) -> None:
        if self.on_event is not None and self.is_main:
            try:
                self.on_event(event)
            except Exception as exc:  # a UI callback must never kill training
                print(f"smart grpo: on_event failed: {exc}")


# ---------------------------------------------------------------------------- setup
def _device(config: GRPORunConfig) -> str:
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but CUDA is not available")
    return config.device


def _check_maa_weights(config: GRPORunConfig) -> None:
    """UserError at once when an MAA reward has no usable weights (missing, or a file that cannot be a
    checkpoint); the scorer itself loads later, in the reward's first call."""
    from engine.maa_weights import MAAUnavailable, check_checkpoint, find_checkpoint, missing_weights_message

    path = find_checkpoint(config.maa)
    if path is None:
        raise UserError(f"MAA weights unavailable: {missing_weights_message(config.maa)}")
    try:
        check_checkpoint(path)
    except MAAUnavailable as exc:
        raise UserError(f"MAA weights unavailable: {exc}") from None


def _build_scorer_factory(config: GRPORunConfig, device: str):
    def load():
        from engine import scorer as scorer_mod

        if config.maa_random:
            model = scorer_mod.build_maa_model(small=config.maa_random_size != "full", seed=config.seed)
            return scorer_mod.MAAScorer.from_model(model,
                                                   device=device, is_random=True)
        try:
            return scorer_mod.MAAScorer.load(checkpoint=config.maa, device=device, allow_download=False)
        except scorer_mod.MAAUnavailable as exc:
            raise UserError(f"MAA weights unavailable: {exc}") from None

    return load


def _prompt_dataset(config: GRPORunConfig, tokenizer, n: int):
    from datasets import Dataset

    from training.prompts import build_prompt_source

    source = build_prompt_source(config.prompts, tokenizer, bars=config.prompt_bars)
    rng = random.Random(config.seed)
    prompts = [tokenizer.ids_to_text(p) for p in source.sample(n, rng)]
    return Dataset.from_dict({"prompt": prompts}), source


def _num_processes() -> int:
    try:
        from accelerate import PartialState

        return PartialState().num_processes
    except Exception:
        return int(os.environ.get("WORLD_SIZE", "1"))


def _bf16_native(device: str) -> bool:
    """bf16 "auto": on CUDA GPUs that support it and on CPUs with bf16 matrix instructions."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    from engine.cpu import native_bf16

    return native_bf16()


def build_trainer(config: GRPORunConfig, *, on_event=None, should_stop=None):
    """The configured SmartGRPOTrainer and its run state (no training yet)."""
    from transformers import Phi3ForCausalLM
    from trl import GRPOConfig

    from engine.policy import Policy, PolicyLoadError
    from training.rewards import RolloutAnalyzer, build_rewards, needs_maa, parse_reward_spec

    config.validate()
    device = _device(config)
    world = _num_processes()
    per_step = config.prompts_per_step * config.group
    if per_step % world:
        raise UserError(f"prompts × group ({per_step}) must divide evenly over {world} processes")
    local = per_step // world
    micro = config.micro_batch or local
    if local % micro:
        raise UserError(f"micro-batch {micro} must divide the per-process batch {local}")
    grad_accum = local // micro

    try:
        policy = Policy.load(config.model)
    except PolicyLoadError as exc:
        raise UserError(str(exc)) from None
    tokenizer = policy.tokenizer
    # The reference model is re-read from config._name_or_path (TRL): it must be the saved directory.
    model = Phi3ForCausalLM.from_pretrained(str(Path(config.model).resolve()), use_safetensors=True,
                                            dtype=torch.float32)
    del policy
    hf_tok = tokenizer.hf_tokenizer()
    ctx = int(model.config.max_position_embeddings)
    if config.max_completion_tokens >= ctx - 8:
        raise UserError(f"max completion tokens must be below the model's context ({ctx})")

    specs = parse_reward_spec(config.reward)
    use_maa = needs_maa(specs) or config.maa_random
    if needs_maa(specs) and not config.maa_random:
        _check_maa_weights(config)  # now, not after a whole generation step
    processes = config.render_processes
    if processes is None:
        processes = max(1, (os.cpu_count() or 2) // world)
    analyzer = RolloutAnalyzer(tokenizer, seconds=config.seconds, sample_rate=config.sample_rate,
                               soundfont=config.soundfont, processes=processes,
                               scorer_factory=_build_scorer_factory(config, device) if use_maa else None,
                               max_completion_tokens=config.max_completion_tokens)
    reward_funcs, weights = build_rewards(specs, analyzer)
    if config.maa_random and not needs_maa(specs):
        # Score (and log) the MAA axes alongside an offline reward: measures the MAA path's cost.
        from training.rewards import MAAReward

        reward_funcs.append(MAAReward(analyzer, "CE"))
        weights.append(0.0)

    bf16 = {"on": True, "off": False, "auto": _bf16_native(device)}[config.bf16]
    out = Path(config.out_dir)
    args = GRPOConfig(
        output_dir=str(out / CHECKPOINT_DIR),
        max_steps=config.steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=grad_accum,
        num_generations=config.group,
        max_completion_length=config.max_completion_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        beta=config.beta,
        learning_rate=config.lr,
        lr_scheduler_type=config.lr_schedule,
        warmup_steps=config.warmup_steps,
        weight_decay=0.0,
        max_grad_norm=config.max_grad_norm,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        epsilon=config.epsilon,
        num_iterations=config.num_iterations,
        reward_weights=weights,
        # bf16 autocast: ~1.7× faster forward/backward on CPUs with bf16 instructions, ~12× slower on CPUs
        # that emulate them (measured; BENCHMARKS.md). Gradient checkpointing only trades time for memory.
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=device == "cpu",
        logging_steps=1,
        report_to="none",
        save_strategy="steps" if config.save_every else "no",
        save_steps=config.save_every or 1,
        save_total_limit=config.keep_checkpoints,
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=True,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        log_completions=False,
        shuffle_dataset=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )

    n_prompts = config.steps * config.prompts_per_step * config.num_iterations
    dataset, source = _prompt_dataset(config, tokenizer, n_prompts)
    run = _Run(config, tokenizer, on_event, should_stop, is_main=args.process_index == 0)
    run.maa_random = config.maa_random
    run.prompt_source = source.describe()
    trainer = make_trainer_class()(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=hf_tok,
        callbacks=[_make_callbacks(run)],
        generation=config.generation,
        analyzer=analyzer,
        sampler=(StudioSampler.for_tokenizer(tokenizer, dict(DEFAULT_TEMPERATURE_FACTORS))
                 if config.rollouts == "studio" else None),
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # events.jsonl / on_event carry the logs: no dict dumps or progress bars on stdout.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    run.trainer = trainer
    run.analyzer = analyzer
    return trainer, run


# ---------------------------------------------------------------------------- the run
def run_grpo(config: GRPORunConfig, on_event: Callable[[dict], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> GRPOResult:
    """Run (or resume) a SMART GRPO fine-tuning; see the module docstring for outputs."""
    config.validate()
    out = Path(config.out_dir)
    cfg_path = out / "run_config.json"
    resume_from = None
    resume_step = 0
    elapsed_offset = 0.0
    guard_baseline = None
    is_main = int(os.environ.get("RANK", "0")) == 0
    if config.resume:
        if cfg_path.exists():
            stored = GRPORunConfig.from_dict(json.loads(cfg_path.read_text()))
            for key in ("model", "steps", "prompts_per_step", "group", "reward", "prompts", "seed", "lr", "beta"):
                if getattr(stored, key) != getattr(config, key):
                    raise UserError(f"--resume: {key} differs from the run in {out} "
                                    f"({getattr(stored, key)!r} there, {getattr(config, key)!r} now)")
        ckpts = complete_checkpoints(out)
        if ckpts:
            resume_step, resume_from = ckpts[-1]
            info = json.loads((resume_from / CHECKPOINT_MARKER).read_text())
            elapsed_offset = float(info.get("elapsed_s") or 0.0)
            guard_baseline = info.get("guard_baseline")
    elif is_main:  # other ranks would see the files rank 0 is writing
        if out.exists() and (cfg_path.exists() or (out / "events.jsonl").exists()):
            raise UserError(f"{out} already holds a run: use --resume to continue it, or another --out")
    _check_inputs(config)  # before anything is written: a typo must not leave a half-made run behind
    out.mkdir(parents=True, exist_ok=True)
    if is_main:
        if (out / STOP_FILE).exists():
            (out / STOP_FILE).unlink()
        atomic_write_text(cfg_path, json.dumps(config.to_dict(), indent=2))
        # Events after the checkpoint we resume from were produced by weights we no longer have.
        truncate_events(out / "events.jsonl", resume_step)
        if resume_from is None:
            # Incomplete checkpoints (killed mid-save) would confuse the Trainer: remove them.
            shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
        else:
            for d in (out / CHECKPOINT_DIR).glob("checkpoint-*"):
                if not (d / CHECKPOINT_MARKER).exists():
                    shutil.rmtree(d, ignore_errors=True)

    threads_before = torch.get_num_threads()
    if config.cpu_threads:
        torch.set_num_threads(int(config.cpu_threads))
    try:
        return _train(config, out, on_event, should_stop, resume_from, resume_step, elapsed_offset, guard_baseline)
    finally:
        torch.set_num_threads(threads_before)


def _train(config, out, on_event, should_stop, resume_from, resume_step, elapsed_offset, guard_baseline) -> GRPOResult:
    trainer, run = build_trainer(config, on_event=on_event, should_stop=should_stop)
    run.elapsed_offset = elapsed_offset
    if run.guard is not None and guard_baseline is not None:
        run.guard.baseline = float(guard_baseline)
    if run.is_main and config.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops TensorBoard points after the checkpoint we resume from.
            run.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1 if resume_from else None)
        except ImportError:
            run.tb = None
    run.emit({"event": "start", "step": resume_step, "resumed_from": str(resume_from) if resume_from else None,
              "generation": trainer.generation_backend, "rollouts": trainer.rollouts,
              "device": str(trainer.args.device)})

    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    steps_done = int(trainer.state.global_step)
    trainer.accelerator.wait_for_everyone()

    rolled_back_to = None
    final_dir = out / "final"
    model = trainer.accelerator.unwrap_model(trainer.model)
    if run.stopped_by == "diversity_guard" and config.guard_action == "rollback":
        target = _rollback_target(run, out)
        if target is not None:
            rolled_back_to, state = target
            model.load_state_dict(state)
    if run.is_main:
        from engine.policy import Policy

        tmp = out / "final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        Policy(model, run.tokenizer).save(tmp)
        shutil.rmtree(final_dir, ignore_errors=True)
        tmp.rename(final_dir)
    trainer.accelerator.wait_for_everyone()
    if run.tb is not None:
        run.tb.close()
    run.analyzer.close()

    events = read_events(out / "events.jsonl")
    result = GRPOResult(out_dir=str(out), final_model=str(final_dir), steps_done=steps_done, stopped_by=run.stopped_by,
                        rolled_back_to=rolled_back_to, events=str(out / "events.jsonl"),
                        reward_first=events[0].get("reward_mean") if events else None,
                        reward_last=events[-1].get("reward_mean") if events else None)
    if run.is_main:
        result.run_card = str(write_run_card(config, result, events, run))
        run.emit({"event": "done", "step": steps_done, "stopped_by": run.stopped_by, "final_model": str(final_dir),
                  "rolled_back_to": rolled_back_to})
    return result


def _check_inputs(config: GRPORunConfig) -> None:
    from engine.policy import Policy, PolicyLoadError
    from training.rewards import parse_reward_spec

    try:
        Policy.load(config.model)
    except PolicyLoadError as exc:
        raise UserError(str(exc)) from None
    parse_reward_spec(config.reward)


def _rollback_target(run: _Run, out: Path) -> tuple[int, dict] | None:
    """The best state above the diversity floor: an in-memory snapshot or a complete checkpoint."""
    best_step, best_reward, best_state = None, -math.inf, None
    if run.best is not None:
        best_step, best_reward, best_state = run.best["step"], run.best["reward_mean"], run.best["state"]
    guard = run.guard
    for step, d in complete_checkpoints(out):
        info = json.loads((d / CHECKPOINT_MARKER).read_text())
        # A checkpoint's marker carries the step record of its last update (rewards before it).
        if guard.above_floor(info.get("diversity")) and (info.get("reward_mean") or -math.inf) > best_reward \
                and (guard.fired_at is None or step < guard.fired_at):
            best_step, best_reward, best_state = step, info["reward_mean"], None
            best_dir = d
    if best_step is None:
        return None
    if best_state is None:
        from safetensors.torch import load_file

        best_state = load_file(str(best_dir / "model.safetensors"))
    return best_step, best_state


def write_run_card(config: GRPORunConfig, result: GRPOResult, events: list[dict], run: _Run | None = None) -> Path:
    out = Path(config.out_dir)
    rewards = [e["reward_mean"] for e in events if e.get("reward_mean") is not None]
    k = max(1, min(10, len(rewards) // 5 or 1))
    summary: dict[str, Any] = {
        "steps": len(events),
        "reward_first": rewards[0] if rewards else None,
        "reward_last": rewards[-1] if rewards else None,
        "reward_first_mean": float(np.mean(rewards[:k])) if rewards else None,
        "reward_last_mean": float(np.mean(rewards[-k:])) if rewards else None,
        "reward_max": max(rewards) if rewards else None,
        "window": k,
    }
    for key in ("diversity", "kl", "completion_tokens", *MAA_FIELDS):
        vals = [e[key] for e in events if e.get(key) is not None]
        if vals:
            summary[f"{key}_first"], summary[f"{key}_last"] = vals[0], vals[-1]
    guard_events = [e["guard"] for e in events if "guard" in e]
    import transformers
    import trl

    card = {
        "kind": "smart-grpo",
        "project_version": _project_version(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "config": config.to_dict(),
        "prompt_source": getattr(run, "prompt_source", None),
        "result": {k: v for k, v in asdict(result).items() if k not in ("extra",)},
        "reward_curve": summary,
        "guard": guard_events[0] if guard_events else None,
        "maa_random": bool(config.maa_random),
        "generation": getattr(getattr(run, "trainer", None), "generation_backend", None),
        "rollouts": getattr(getattr(run, "trainer", None), "rollouts", None),
    }
    atomic_write_text(out / "run_card.json", json.dumps(card, indent=2))
    lines = [
        f"# SMART GRPO run — {out.name}",
        "",
        f"Base model: `{config.model}` · preset `{config.preset}` · reward `{config.reward}` · prompts `{config.prompts}`",
        f"{config.steps} steps × {config.prompts_per_step} prompts × {config.group} completions "
        f"(≤ {config.max_completion_tokens} tokens), β = {config.beta}, lr = {config.lr} ({config.lr_schedule}), "
        f"temperature {config.temperature}, loss `{config.loss_type}`, seed {config.seed}.",
        "",
        f"Finished: **{result.stopped_by}** after {result.steps_done} steps; final model `final/`"
        + (f" (rolled back to the weights of step {result.rolled_back_to})" if result.rolled_back_to is not None else "")
        + ".",
        "",
        "| | first | last |",
        "|---|---|---|",
        f"| reward (mean of {k} steps) | {_fmt(summary['reward_first_mean'])} | {_fmt(summary['reward_last_mean'])} |",
    ]
    for key in ("diversity", "kl", "completion_tokens", *MAA_FIELDS):
        if f"{key}_first" in summary:
            lines.append(f"| {key} | {_fmt(summary[f'{key}_first'])} | {_fmt(summary[f'{key}_last'])} |")
    if config.maa_random:
        lines += ["", "MAA scores come from a random-weight model (plumbing test): they are not aesthetic ratings."]
    if guard_events:
        g = guard_events[0]
        lines += ["", f"Diversity guard fired at step {g['step']}: recent diversity {g['diversity_recent']:.3f} < "
                      f"floor {g['floor']:.3f} ({g['fraction']} × baseline {g['baseline']:.3f}); action: {g['action']}."]
    lines += ["", f"SMART Studio {card['project_version']} · torch {torch.__version__} · transformers "
                  f"{transformers.__version__} · trl {trl.__version__}", ""]
    atomic_write_text(out / "README.md", "\n".join(lines))
    return out / "run_card.json"


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.4g}"
