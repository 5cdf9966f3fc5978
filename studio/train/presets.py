"""The Train panel's numbers in words: the host's presets as the panel's fields and how long each takes on
this host (estimated), a running job's ETA timed from its own steps, what it does before its first step,
a job's status line (why a queued one waits) and the log line of each of its steps."""

from __future__ import annotations

import time

from engine import api
from engine.job_api import JobInfo, JobState, JobStep
from engine.maa_weights import AXES

WEIGHTED = "weighted"  # the panel's own entry: a weighted mix of MAA axes typed in the Weights field
# The panel's fields, as /v1/train option names (their values come from the preset chosen).
PRESET_FIELDS = ("steps", "prompts_per_step", "group", "max_completion_tokens", "beta", "lr", "reward", "save_every")


def preset_values(catalogue: dict, name: str) -> dict:
    """The panel's fields under preset `name` of a /v1/train/options body: the defaults, then the preset's."""
    defaults = {o["name"]: o.get("default") for o in catalogue.get("options", [])}
    values = {**defaults, **catalogue["presets"][name]["options"]}
    return {k: values[k] for k in PRESET_FIELDS if k in values}


def local_catalogue() -> dict:
    """What a host of this version offers, shown until the connected host has said (same contract)."""
    return api.train_options(maa_weights=False)


def step_eta(records: list[JobStep], steps: int) -> float | None:
    """Seconds left, timed from the steps themselves: from the second step on, the time per step between the
    first and the last step (the setup before step 1 — fitting the taste, sampling, reference passes —
    is not a step's time); after one step, its elapsed time (an upper bound)."""
    timed = [r for r in records if r.elapsed_s is not None]
    if not timed or not steps:
        return None
    first, last = timed[0], timed[-1]
    if last.step >= steps:
        return 0.0
    if last.step > first.step:
        per_step = (last.elapsed_s - first.elapsed_s) / (last.step - first.step)
    elif last.step > 0:
        per_step = last.elapsed_s / last.step
    else:
        return None
    return max(0.0, per_step * (steps - last.step))


def job_phase(info: JobInfo | None) -> str:
    """What a running job does before its first step, in words: the phase its process reports (taste tunes:
    fitting, sampling, the reference pass), else what such a job does first."""
    if info is not None and info.phase is not None:
        return info.phase.phase
    if info is not None and info.is_taste_tune and info.taste_method == "dpo":
        return ("preparing: fitting your taste model on your picks, sampling fresh continuations for it to "
                "rank, then the original model's reference pass")
    if info is not None and info.is_taste_tune:
        return "preparing: fitting your taste model on your picks, loading the model"
    return "preparing: loading the model and sampling the first group of completions"


# Seconds per completion token of one GRPO step (rollouts + update), from BENCHMARKS.md ("GRPO iteration"):
# the paper policy on a 2-vCPU host took 32–85 s per 64 × 256-token step (≈ 2–5 ms a token); the paper
# reports 15 s per step on an RTX 3090 (≈ 1 ms). Full-size MAA on a CPU adds ≈ 4 s per completion.
CPU_S_PER_TOKEN, GPU_S_PER_TOKEN, MAA_CPU_S_PER_COMPLETION = 0.003, 0.001, 4.0
JOB_SETUP_S = 60.0  # starting the job process and loading the model


def preset_seconds(values: dict, gpu: bool, needs_maa: bool) -> float:
    """A rough duration of a GRPO run with these option values (to choose a preset, not a promise: the
    job's own ETA, timed from its steps, replaces it once it runs)."""
    completions = int(values["prompts_per_step"]) * int(values["group"])
    step = completions * int(values["max_completion_tokens"]) * (GPU_S_PER_TOKEN if gpu else CPU_S_PER_TOKEN)
    if needs_maa and not gpu:
        step += completions * MAA_CPU_S_PER_COMPLETION
    return JOB_SETUP_S + int(values["steps"]) * step


def fmt_duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{max(1, round(seconds / 60))} min"


def fmt_eta(seconds) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def fmt_number(v, digits=3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "—"


def queue_reason(info: JobInfo | None, job_id: str | None, listed_jobs: list[JobInfo]) -> str:
    """Why a queued job waits: the host runs one training job at a time; name the one ahead of it."""
    ahead = [j for j in listed_jobs if j.state is JobState.RUNNING and j.id != job_id]
    position = info.queue_position if info is not None else None
    where = f"position {position} in the queue" if position else "in the queue"
    if not ahead:
        return f" ({where})"
    job = ahead[0]
    name = job.name or job.reward or "a job"
    return (f" ({where}: the host trains one job at a time, and job {job.id} ({name}, step "
            f"{job.progress.step}/{job.progress.steps or '?'}) is running — pause or cancel it to start this one)")


def job_status(job_id: str | None, info: JobInfo | None, state: JobState | None, step: int, steps: int,
               records: list[JobStep], listed_jobs: list[JobInfo]) -> str:
    """The followed job's status line: state, progress and ETA (or what it prepares), why it waits or failed."""
    running = state is JobState.RUNNING
    preparing = running and not records
    eta = step_eta(records, steps) if running else None
    if eta is None and running and not preparing and info is not None:
        eta = info.eta_s
    text = f"Job {job_id}: {state or '?'}"
    if state is JobState.QUEUED:
        text += queue_reason(info, job_id, listed_jobs)
    if preparing:
        started = info.started if info is not None else None
        so_far = f", {fmt_eta(time.time() - started)} so far" if started is not None and time.time() >= started else ""
        text += f" · {job_phase(info)}{so_far} · ETA once the first step is timed"
    elif running:
        text += f" · step {step} of {steps or '?'} · ETA {fmt_eta(eta)}"
    if info is not None and info.is_taste_tune and state is not None and state.resumable:
        text += " · a taste tune cannot continue mid-run: Resume starts over from the original model"
    if info is not None and info.error:
        text += f" — {info.error}"
    return text


def describe_step(record: JobStep) -> str:
    """The log line of a step record: a DPO taste tune's pair rankings, or a GRPO step's reward (and MAA axes),
    KL, diversity and length."""
    if record.is_dpo:
        return (f"step {record.step}/{record.steps_total or '?'} · loss {fmt_number(record.metric('loss'))} · "
                f"pairs ranked right {fmt_number(record.metric('rewards_accuracies'), 2)} · margin "
                f"{fmt_number(record.metric('rewards_margins'))}")
    parts = [f"step {record.step}", f"reward {fmt_number(record.metric('reward_mean'))}"]
    parts += [f"{axis} {fmt_number(record.metric(axis), 2)}" for axis in AXES if record.metric(axis) is not None]
    parts += [f"KL {fmt_number(record.metric('kl'), 4)}", f"diversity {fmt_number(record.metric('diversity'))}",
              f"{fmt_number(record.metric('completion_tokens'), 0)} tokens"]
    if record.guard:
        parts.append("diversity floor reached")
    return " · ".join(parts)
