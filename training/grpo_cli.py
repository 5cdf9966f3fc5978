"""`smart grpo`: SMART fine-tuning of a policy with TRL GRPO (see training/grpo.py).

    smart grpo --model resources/models/default --out runs/smart            # the paper's run
    smart grpo --model M --out runs/quick --preset smoke                    # seconds, offline reward
    smart grpo --model M --out runs/x --reward "maa-ce=1,maa-pq=0.5" --steps 400 --min-diversity 0.6
    accelerate launch --num_processes 2 -m engine.cli grpo ...              # several processes
    smart grpo --model M --out runs/smart --resume                          # after a crash / kill
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.api import MAA_AXES, PRESETS, REWARDS
from engine.cliutil import HelpFormatter
from engine.errors import UserError

if TYPE_CHECKING:  # the training stack loads only when a run starts
    from training.grpo import GRPORunConfig

# CLI flag → GRPORunConfig field (flags default to None so a preset or a resumed run fills the rest).
FLAGS = [
    ("--steps", "steps", int, "iterations (optimizer steps); paper 200"),
    ("--prompts-per-step", "prompts_per_step", int, "prompts per iteration; paper 8"),
    ("--group", "group", int, "completions per prompt (GRPO group size); paper 8"),
    ("--max-completion-tokens", "max_completion_tokens", int, "longest completion in tokens; paper 256"),
    ("--reward", "reward", str, f"{' | '.join(r.name for r in REWARDS)} | module:function, "
                                "or weighted 'maa-ce=1,maa-pq=0.5'; paper maa-ce"),
    ("--beta", "beta", float, "KL coefficient to the frozen reference; paper 0.04"),
    ("--lr", "lr", float, "peak learning rate (linear decay to 0); paper 1e-4"),
    ("--lr-schedule", "lr_schedule", str, "transformers scheduler name; paper linear"),
    ("--temperature", "temperature", float, "sampling temperature; paper 1.0"),
    ("--top-p", "top_p", float, "nucleus sampling (1.0 = off); default 1.0"),
    ("--soundfont", "soundfont", str, "SoundFont for rendering (default: the shipped piano)"),
    ("--loss-type", "loss_type", str, "TRL GRPO loss: grpo | dr_grpo | dapo | bnpo | ...; default grpo"),
    ("--scale-rewards", "scale_rewards", str, "advantage normalization: group | batch | none; default group"),
    ("--seed", "seed", int, "random seed (prompts, sampling, init of the MAA stand-in); default 0"),
    ("--prompts", "prompts", str, "procedural | procedural+note | data:DIR[:split] | MIDI files/folders "
                                "(comma-separated); default procedural"),
    ("--prompt-bars", "prompt_bars", int, "bars of each MIDI file used as its prompt; default 4"),
    ("--save-every", "save_every", int, "checkpoint every N steps (0 = only at the end); paper 50"),
    ("--keep-checkpoints", "keep_checkpoints", int, "keep only the newest N checkpoints (default: keep all)"),
    ("--min-diversity", "min_diversity", float, "stop when diversity < F × its starting value (e.g. 0.5; "
                                                "default: no guard)"),
    ("--guard-action", "guard_action", str, "on a diversity collapse: rollback (final = best state above the "
                                            "floor) | stop; default rollback"),
    ("--max-drift", "max_drift", float, "drift guard: warn when the samples' musical features move more than F "
                                        "base-model standard deviations from the first step's (0 = off); default 1"),
    ("--drift-action", "drift_action", str, "on drift beyond --max-drift: warn | stop; default warn"),
    ("--maa", "maa", str, "MAA checkpoint (checkpoint.pt or HF directory); default: cached weights"),
    ("--seconds", "seconds", float, "seconds of audio the reward hears; paper 10"),
    ("--micro-batch", "micro_batch", int, "completions per forward/backward pass (default: the whole step)"),
    ("--rollouts", "rollouts", str, "studio (sampled as the studio plays: grammar, family factors; scored with "
                                    "those log-probabilities) | model (the model's own distribution); default studio"),
    ("--generation", "generation", str, "fast (engine.fastdecode) | hf (transformers generate) | auto; "
                                        "default auto"),
    ("--device", "device", str, "auto | cpu | cuda; default auto (cuda when available)"),
    ("--render-processes", "render_processes", int, "render worker processes (default: one per CPU core)"),
    ("--cpu-threads", "cpu_threads", int, "torch CPU threads (1 is fastest when the machine is busy; "
                                                "default: torch's)"),
    ("--num-iterations", "num_iterations", int, "GRPO updates per generated batch (μ); default 1"),
]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "grpo", help="SMART fine-tuning with GRPO on audio-aesthetic rewards",
        description="Fine-tune a policy with TRL's GRPOTrainer (paper §3.5 defaults). Writes OUT/events.jsonl, "
                    "TensorBoard logs, checkpoints, OUT/final (a model directory) and a run card. Options "
                    "not given take the --preset's values ('paper N': the paper's).",
        formatter_class=HelpFormatter, epilog="examples:\n" + __doc__.split("\n\n", 1)[1])
    p.add_argument("--model", help="base model directory (a SMART Policy directory); required unless --resume")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--preset", default=None, help="option set the other flags override: "
                   + "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items())
                   + " (default: paper)")
    for flag, dest, typ, help_ in FLAGS:
        p.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete checkpoint")
    p.add_argument("--maa-random", action="store_true",
                   help="score with a small random-weight MAA (plumbing/timing only, not aesthetic ratings)")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    p.add_argument("--use-vllm", action="store_true", help="generate with TRL's vLLM integration (GPU, vllm installed)")
    p.add_argument("--quiet", action="store_true", help="no per-step lines on stdout")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.set_defaults(func=run)


def config_from_args(args) -> "GRPORunConfig":
    from training.grpo import GRPORunConfig

    explicit = {dest: getattr(args, dest) for _, dest, _, _ in FLAGS if getattr(args, dest, None) is not None}
    if args.model:
        explicit["model"] = args.model
    explicit["out_dir"] = args.out
    if args.maa_random:
        explicit["maa_random"] = True
    if args.no_tensorboard:
        explicit["tensorboard"] = False
    if args.use_vllm:
        explicit["use_vllm"] = True
    stored_path = Path(args.out) / "run_config.json"
    if args.resume and stored_path.exists():
        # A resumed run keeps its configuration; flags given now override it (run_grpo refuses
        # changes that would make the run a different one).
        stored = json.loads(stored_path.read_text())
        config = GRPORunConfig.from_dict({**stored, **explicit})
    else:
        config = GRPORunConfig.from_preset(args.preset or "paper", **explicit)
    config.resume = bool(args.resume)
    return config


def _progress_line(event: dict, total: int) -> str | None:
    kind = event.get("event")
    if kind == "start":
        return f"smart grpo: {'resuming at step ' + str(event['step']) if event.get('resumed_from') else 'starting'} " \
               f"({event.get('generation')} generation, {event.get('rollouts')} rollouts, on {event.get('device')})"
    if kind == "checkpoint":
        return f"  checkpoint {event['path']}"
    if kind == "guard":
        return (f"  diversity guard: {event['diversity_recent']:.3f} < floor {event['floor']:.3f} at step "
                f"{event['step']} → {event['action']}")
    if kind == "done":
        return f"smart grpo: {event['stopped_by']} after {event['step']} steps; final model {event['final_model']}"
    if kind is not None or "step" not in event:
        return None
    parts = [f"step {event['step']}/{total}"]
    if event.get("reward_mean") is not None:
        parts.append(f"reward {event['reward_mean']:.4f}±{event.get('reward_std') or 0:.3f}")
    for axis in MAA_AXES:
        if axis in event:
            parts.append(f"{axis} {event[axis]:.2f}")
    if event.get("kl") is not None:
        parts.append(f"kl {event['kl']:.4f}")
    if event.get("diversity") is not None:
        parts.append(f"div {event['diversity']:.3f}")
    if event.get("completion_tokens") is not None:
        parts.append(f"len {event['completion_tokens']:.0f}")
    if event.get("step_s") is not None:
        parts.append(f"{event['step_s']:.2f}s/it")
    return "  " + " · ".join(parts)


def run(args) -> int:
    import warnings

    from training.grpo import run_grpo

    # transformers 5 renames (gradient → activation checkpointing) that TRL still uses: noise for users.
    warnings.filterwarnings("ignore", message=".*(gradient_checkpointing|is_gradient_checkpointing).*deprecated",
                            category=FutureWarning)

    config = config_from_args(args)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    if not config.model:
        raise UserError("--model DIR is required (or --resume a run that has one)")
    on_event = None
    if not args.quiet:
        def on_event(event: dict) -> None:
            line = _progress_line(event, config.steps)
            if line:
                print(line, flush=True)
    result = run_grpo(config, on_event=on_event)
    if result.stopped_by == "diversity_guard" and not args.quiet:
        print(f"smart grpo: stopped by the diversity guard (see {Path(config.out_dir) / 'README.md'})", file=sys.stderr)
    return 0
