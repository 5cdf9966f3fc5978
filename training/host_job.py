"""The process of one training job of the policy host: `smart host-job JOBDIR [--resume] [--parent-pid N]`.

The host (`engine.host.jobs`) starts it as `python -m engine.cli host-job …` (the command name is
`engine.api.JOB_PROCESS_COMMAND`; it is hidden from `smart --help`), so the host never names this
package. It runs the GRPO run configured in JOBDIR/job.json with JOBDIR as the run directory and leaves
behind what the host reads when it exits: job_result.json on success, job_error.json (`{"error":
"Type: message"}`) on failure. Step records go to JOBDIR/events.jsonl (`training.grpo`).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from engine.api import ERROR_FILE, JOB_FILE, JOB_PROCESS_COMMAND, RESULT_FILE
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
