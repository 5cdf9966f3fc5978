"""The process of one training job of the policy host: `smart host-job JOBDIR [--resume] [--parent-pid N]`.

The host (`engine.host.jobs`) starts it as `python -m engine.cli host-job …` (the command name is
`engine.api.JOB_PROCESS_COMMAND`; it is hidden from `smart --help`), so the host never names this
package. It runs the job configured in JOBDIR/job.json and leaves behind what the host reads when it
exits: job_result.json on success, job_error.json (`{"error": "Type: message"}`) on failure.

- A GRPO job (no "kind"): the GRPO run with JOBDIR as its run directory; step records go to
  JOBDIR/events.jsonl (`training.grpo`); --resume continues from the last checkpoint.
- A taste-tuning job (`kind: taste-tune`, `engine.api.TASTE_JOB_KIND`): fits the musician's taste on
  JOBDIR/pairs (→ JOBDIR/taste), then `training.taste.tune` into JOBDIR/tune; its step records
  (DPO: loss, reward accuracies and margins; GRPO: reward, KL, diversity) go to JOBDIR/events.jsonl.
  Done, JOBDIR/tune becomes JOBDIR/final; paused (JOBDIR/STOP), the model trained so far becomes
  JOBDIR/checkpoints/checkpoint-N (usable, comparable). A tune cannot continue mid-run: every start,
  --resume included, starts over from the base model (the result says `restarted: true`).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from engine.api import (CHECKPOINT_DIR, CHECKPOINT_MARKER, ERROR_FILE, EVENTS_FILE, FINAL_DIR, JOB_FILE,
                        JOB_PROCESS_COMMAND, PHASE_FILE, RESULT_FILE, RUN_CONFIG_FILE, STOP_FILE, TASTE_JOB_KIND)
from engine.cliutil import HelpFormatter, examples
from engine.errors import UserError, first_line
from engine.music import atomic_write_text

# Exit status when the host that started the job is gone (the next host resumes the job).
PARENT_GONE_STATUS = 75


def _watch_parent(parent_pid: int) -> None:
    """Exit when the host that started us is gone: the next host resumes the job from its checkpoint."""
    def loop():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(PARENT_GONE_STATUS)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def _write_error(directory: Path, message: str) -> None:
    try:
        atomic_write_text(directory / ERROR_FILE, json.dumps({"error": message}))
    except OSError:
        pass  # the job folder is gone or full: the host reports the exit status instead


def run_job(job_dir: str | os.PathLike, *, resume: bool, parent_pid: int | None = None) -> int:
    import warnings

    from training.grpo import GRPORunConfig, run_grpo

    # transformers renames (gradient → activation checkpointing) that TRL still uses: noise in job.log.
    warnings.filterwarnings("ignore", message=".*(gradient_checkpointing|is_gradient_checkpointing).*deprecated",
                            category=FutureWarning)
    directory = Path(job_dir)
    if parent_pid:
        _watch_parent(parent_pid)
    try:
        data = json.loads((directory / JOB_FILE).read_text())
        if data["config"].get("kind") == TASTE_JOB_KIND:
            result = run_taste_job(directory, data, resume=resume)
            atomic_write_text(directory / RESULT_FILE, json.dumps(result))
            return 0
        config = GRPORunConfig.from_dict(data["config"])
        config.out_dir = str(directory)
        config.resume = bool(resume)
        print(f"job {data['id']}: {'resuming' if resume else 'starting'} — {config.steps} steps, reward "
              f"{config.reward}, {config.prompts_per_step}×{config.group} completions per step", flush=True)

        def on_event(event: dict) -> None:
            if event.get("event"):
                print(json.dumps(event), flush=True)

        result = run_grpo(config, on_event=on_event)
    except UserError as exc:
        _write_error(directory, str(exc))
        print(f"job failed: {exc}", flush=True)
        return 2
    except BaseException as exc:  # noqa: BLE001 -- whatever ends the run, the host must learn what it was
        traceback.print_exc()
        sys.stdout.flush()
        if isinstance(exc, KeyboardInterrupt):
            _write_error(directory, "interrupted")
            return 130
        if isinstance(exc, SystemExit):
            code = exc.code if isinstance(exc.code, int) else 1
            if code:
                _write_error(directory, f"SystemExit: {exc.code}")
            return code
        _write_error(directory, f"{type(exc).__name__}: {first_line(exc)}")
        return 1
    atomic_write_text(directory / RESULT_FILE, json.dumps({
        "stopped_by": result.stopped_by, "steps_done": result.steps_done, "final_model": result.final_model,
        "rolled_back_to": result.rolled_back_to, "reward_first": result.reward_first,
        "reward_last": result.reward_last, "run_card": result.run_card}))
    return 0


TUNE_DIR = "tune"  # the running tune's output; renamed to final/ or checkpoints/checkpoint-N when it ends
TASTE_DIR = "taste"


def run_taste_job(directory: Path, data: dict, *, resume: bool) -> dict:
    """One taste-tuning attempt from the start (see the module docstring); the job_result.json body."""
    import shutil

    from engine.preferences import read_pairs
    from engine.taste import fit_taste
    from training.taste import TuneConfig, tune

    cfg = data["config"]
    # Whatever an earlier attempt left is stale: a tune restarts from the base model.
    shutil.rmtree(directory / TUNE_DIR, ignore_errors=True)
    (directory / EVENTS_FILE).unlink(missing_ok=True)
    (directory / PHASE_FILE).unlink(missing_ok=True)
    atomic_write_text(directory / RUN_CONFIG_FILE, json.dumps(cfg, indent=2))  # the host rebuilds a lost job.json
    how = "restarting from the base model (a taste tune cannot continue mid-run)" if resume else "starting"
    print(f"job {data['id']}: {how} — taste tuning, method {cfg['method']}, {cfg.get('steps') or 'default'} steps",
          flush=True)
    def phase(text: str) -> None:  # the host shows it until the first step (GET /v1/jobs/ID "phase")
        atomic_write_text(directory / PHASE_FILE, json.dumps({"phase": text, "since": time.time()}))

    phase("fitting your taste model on your picks")
    try:
        pairs = read_pairs([cfg["pairs"]])
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    taste, problems = fit_taste(pairs)
    for line in problems:
        print(f"skipped pair: {line}", flush=True)
    taste.save(directory / TASTE_DIR)
    report = taste.report
    print(f"taste fit on {report['pairs']} pairs ({report['decisive']} decisive): cross-validated accuracy "
          f"{report['accuracy']}", flush=True)
    taste.check_ready()
    # The job's options were checked by the host (engine.api.validate_taste_tune_options); None: the tuner's.
    config = TuneConfig.from_options(cfg, taste=str(directory / TASTE_DIR), pairs=[cfg["pairs"]],
                                     out_dir=str(directory / TUNE_DIR))
    events = directory / EVENTS_FILE

    def on_event(event: dict) -> None:
        if isinstance(event.get("step"), int) and "event" not in event:
            with open(events, "a") as f:  # the host streams this file (GET /v1/jobs/ID/events)
                f.write(json.dumps(event) + "\n")
                f.flush()
        elif event.get("event") == "phase":
            phase(str(event.get("phase")))
        elif event.get("event") not in (None, "done"):
            print(json.dumps(event), flush=True)

    card = tune(config, on_event=on_event, should_stop=lambda: (directory / STOP_FILE).exists())
    steps_done, steps_total = int(card.get("steps_done") or 0), card.get("steps_total")
    tuned = directory / TUNE_DIR
    result = {"kind": TASTE_JOB_KIND, "method": cfg["method"], "stopped_by": card.get("stopped_by"),
              "steps_done": steps_done, "steps_total": steps_total, "restarted": bool(resume),
              "taste": {k: report.get(k) for k in ("pairs", "decisive", "ties", "accuracy", "confident")},
              "card": {k: v for k, v in card.items() if k not in ("config", "kind")}}
    if card.get("stopped_by") == "stopped" and steps_done < int(steps_total or 0):
        # Paused: what was trained so far stays usable as a checkpoint; resuming starts over.
        ckpt = directory / CHECKPOINT_DIR / f"checkpoint-{steps_done}"
        shutil.rmtree(ckpt, ignore_errors=True)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tuned.rename(ckpt)
        last = _last_step(events) or {}
        atomic_write_text(ckpt / CHECKPOINT_MARKER, json.dumps({
            "step": steps_done, "elapsed_s": last.get("elapsed_s"), "reward_mean": last.get("reward_mean"),
            "diversity": last.get("diversity"), "partial": True}))
        result.update(final_model=None, checkpoint=str(ckpt))
    else:
        final = directory / FINAL_DIR
        shutil.rmtree(final, ignore_errors=True)
        tuned.rename(final)
        result["final_model"] = str(final)
    return result


def _last_step(events: Path) -> dict | None:
    try:
        lines = events.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def run(args) -> int:
    return run_job(args.job_dir, resume=args.resume, parent_pid=args.parent_pid)


def register(subparsers) -> None:
    # No help=: the command is for the host, not listed in `smart --help`.
    p = subparsers.add_parser(JOB_PROCESS_COMMAND, description="Run one policy-host training job directory "
                                                               "(the host starts this).",
                          formatter_class=HelpFormatter,
                          epilog=examples(f"smart {JOB_PROCESS_COMMAND} ~/.local/share/smart-studio/jobs/ID --resume"))
    p.add_argument("job_dir", metavar="JOB_DIR", help="the job's folder (job.json; the run is written there)")
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="exit when this process (the host) is gone (default: run on regardless)")
    p.set_defaults(func=run)
