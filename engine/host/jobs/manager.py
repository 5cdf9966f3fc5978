"""The process manager: jobs on disk, one job process at a time (`python -m engine.cli host-job JOBDIR`,
a command the `training` package registers) and a FIFO queue; a watcher thread follows the process."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.api import (
    ERROR_FILE,
    EVENTS_FILE,
    JOB_PROCESS_COMMAND,
    RESULT_FILE,
    RUN_CONFIG_FILE,
    STOP_FILE,
    TASTE_JOB_KIND,
)
from engine.errors import UserError
from engine.host.jobs.store import (
    LOG_FILE,
    PARTIAL_SUFFIX,
    PROMPTS_DIR,
    TASTE_PAIRS_DIR,
    Job,
    as_count,
    as_time,
    default_jobs_dir,
    now,
    read_json_object,
    remove_partial_submissions,
)
from engine.host.jobs.submission import SubmissionRules, TastePair, write_procedural_prompts
from engine.job_api import JobState
from engine.music import atomic_write_bytes, atomic_write_text

log = logging.getLogger("smart.host.jobs")

POLL_S = 0.2
CANCEL_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long


class JobManager:
    """Jobs on disk + one worker process at a time + a FIFO queue; a thread watches the process."""

    def __init__(self, jobs_dir: str | os.PathLike | None = None, *, python: str = sys.executable,
                 env: dict | None = None, poll_s: float = POLL_S, resume_interrupted: bool = True):
        self.jobs_dir = Path(jobs_dir) if jobs_dir is not None else default_jobs_dir()
        # A job that was running when the host stopped: resumed first thing (a served host that crashed
        # or was restarted), or paused for the musician to resume (the studio's own host, which stops
        # with the studio: a job the musician chose to stop by closing must not start by itself).
        self.resume_interrupted = resume_interrupted
        self.python = python
        self.env = env
        self.poll_s = poll_s
        self.jobs: dict[str, Job] = {}
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.running: Job | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.on_new_job_dir = None  # callback(Path): the host lists the job's models
        self.defaults: dict = {}  # host-owned options for every job, e.g. {"maa": path, "soundfont": path}
        self.rules = SubmissionRules()  # what submissions are checked against (the host fills it in)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "JobManager":
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            remove_partial_submissions(self.jobs_dir)
            for d in sorted(p for p in self.jobs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                job = Job.load(d)
                if job.state is JobState.RUNNING:
                    # The host stopped while this job ran: make sure its old process is gone, then
                    # resume it from its last complete checkpoint, ahead of the queued jobs — or pause it.
                    _kill_stale(job)
                    if self.resume_interrupted:
                        job.set_state(JobState.QUEUED, resume=True,
                                      restarts=(as_count(job.data.get("restarts")) or 0) + 1,
                                      queued_at=as_time(job.data.get("queued_at")) or 0.0)
                        log.info("job %s was running when the host stopped: resuming it", job.id)
                    else:
                        job.set_state(JobState.PAUSED, finished=now(),
                                      note="paused: it was running when the host stopped; resume continues it")
                        log.info("job %s was running when the host stopped: paused", job.id)
                self.jobs[job.id] = job
                if self.on_new_job_dir is not None:
                    self.on_new_job_dir(d)
        self._thread = threading.Thread(target=self._loop, name="smart-jobs", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Host shutdown: stop the running process (its job stays "running" on disk, so the next host
        resumes it) and the watcher thread."""
        self._closing.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self.lock:
            job = self.running
            process = job.process if job is not None else None
        if process is None:
            return
        _terminate(process, timeout)  # outside the lock: status requests are answered meanwhile
        with self.lock:
            if job.process is process:
                job.process = None
                self._close_log(job)
            if self.running is job:
                self.running = None

    # ------------------------------------------------------------------ API
    def submit(self, options: dict, midi_files: list[bytes], procedural: int = 0, name: str | None = None) -> Job:
        """Create and queue a job from checked options (`check_submission`)."""
        def write(job_id: str, directory: Path, staging: Path) -> dict:
            config = {**options, "out_dir": str(directory), "resume": False}
            prompts_info: dict = {"kind": config["prompts"] if not midi_files else "midi", "midi": len(midi_files),
                                  "procedural": procedural}
            if midi_files:
                pdir = staging / PROMPTS_DIR
                pdir.mkdir()
                for i, data in enumerate(midi_files):
                    atomic_write_bytes(pdir / f"prompt-{i:03d}.mid", data)
                if procedural:
                    write_procedural_prompts(pdir, config["model"], procedural, config["seed"])
                config["prompts"] = str(directory / PROMPTS_DIR)
            for key, value in self.defaults.items():
                if config.get(key) is None and not (key == "maa" and config.get("maa_random")):
                    config[key] = value
            return {"id": job_id, "name": name, "state": JobState.QUEUED, "created": now(), "queued_at": now(),
                    "config": config, "prompts": prompts_info, "resume": False, "attempts": 0}

        return self._create(write)

    def submit_taste(self, options: dict, pairs: list[TastePair], name: str | None = None) -> Job:
        """Create and queue a taste-tuning job from checked options and pairs (`check_taste_submission`).
        The pairs are written in the preference-set layout (JOBDIR/pairs)."""
        from engine.preferences import PreferenceSet

        def write(job_id: str, directory: Path, staging: Path) -> dict:
            prefs = PreferenceSet(staging / TASTE_PAIRS_DIR)
            prefs.record_many(dict(a_midi=pair.a, b_midi=pair.b, prompt_midi=pair.prompt, choice=pair.choice,
                                   source=pair.source) for pair in pairs)  # one write, one sync
            config = {"kind": TASTE_JOB_KIND, **options, "pairs": str(directory / TASTE_PAIRS_DIR),
                      "out_dir": str(directory)}
            decisive = sum(p.choice != "tie" for p in pairs)
            return {"id": job_id, "name": name, "state": JobState.QUEUED, "created": now(), "queued_at": now(),
                    "config": config, "prompts": {"kind": "taste-pairs", "pairs": len(pairs), "decisive": decisive,
                                                  "ties": len(pairs) - decisive},
                    "resume": False, "attempts": 0,
                    "note": "a taste tune cannot continue mid-run: pause keeps the model trained so far as a "
                            "checkpoint, and resume starts over from the base model"}

        return self._create(write)

    def _create(self, write) -> Job:
        """A new job, whole or not at all: `write(id, folder, staging)` fills the hidden folder `.ID.partial`
        and returns the job's data; the folder is renamed to ID once job.json is written (a host killed
        meanwhile leaves no half-made job; on any failure nothing is left)."""
        job_id, directory, staging = self._new_job_dir()
        try:
            data = write(job_id, directory, staging)
            Job(staging, data).save()
            os.rename(staging, directory)  # complete: job.json and every file appear at once
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # never a half-made job
            raise
        job = Job(directory, data)
        with self.lock:
            self.jobs[job_id] = job
        if self.on_new_job_dir is not None:
            self.on_new_job_dir(directory)
        self.wake.set()
        return job

    def _new_job_dir(self) -> tuple[str, Path, Path]:
        """(id, the job's folder, the hidden folder it is made in: `.ID.partial`)."""
        root = self.jobs_dir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        while True:
            job_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
            directory, staging = root / job_id, root / f".{job_id}{PARTIAL_SUFFIX}"
            if not directory.exists():
                try:
                    staging.mkdir()
                except FileExistsError:
                    continue
                return job_id, directory, staging

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def queue(self) -> list[Job]:
        with self.lock:
            return sorted((j for j in self.jobs.values() if j.state is JobState.QUEUED),
                          key=lambda j: (as_time(j.data.get("queued_at")) or 0.0, as_time(j.data.get("created")) or 0.0))

    def describe(self, job: Job, details: bool = True) -> dict:
        with self.lock:
            q = self.queue()
            pos = q.index(job) + 1 if job in q else None
            return job.describe(queue_position=pos, details=details)

    def list(self) -> list[dict]:
        with self.lock:
            jobs = sorted(self.jobs.values(), key=lambda j: (as_time(j.data.get("created")) or 0.0, j.id))
            return [self.describe(j, details=False) for j in jobs]

    def cancel(self, job_id: str) -> Job:
        """Cancel a job; a running one's process is stopped before this returns, so the job is in its
        final state (cancelled) when the caller describes it. The wait for the process (up to
        CANCEL_GRACE_S) happens outside the lock: every other request and the watcher go on meanwhile."""
        job = self.get(job_id)
        with self.lock:
            process = None
            if job.state is JobState.QUEUED:
                job.set_state(JobState.CANCELLED, finished=now())
            elif job.state is JobState.RUNNING:
                job.stop_requested = "cancel"
                process = job.process
                if process is None:
                    self._finish_running(job, -signal.SIGKILL)
            elif job.state is JobState.PAUSED:
                job.set_state(JobState.CANCELLED)
            else:
                raise UserError(f"job {job_id} is {job.state}: nothing to cancel")
        if process is not None:
            _terminate(process, CANCEL_GRACE_S)
            code = process.wait()
            with self.lock:
                if job.process is process:  # the watcher has not finished it meanwhile (it would have, cancelled)
                    self._finish_running(job, code)
        self.wake.set()
        return job

    def _finish_running(self, job: Job, code: int) -> None:
        """The running job's process ended with `code` (the lock held): its final state, and no job runs."""
        self._finish(job, code)
        if self.running is job:
            self.running = None

    def pause(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self.lock:
            if job.state is JobState.QUEUED:
                job.set_state(JobState.PAUSED)
            elif job.state is JobState.RUNNING:
                if job.stop_requested == "cancel":
                    raise UserError(f"job {job_id} is being cancelled")
                job.stop_requested = "pause"
                job.stop_sent_at = time.monotonic()
                atomic_write_text(job.dir / STOP_FILE, "pause requested by the host\n")
            else:
                raise UserError(f"job {job_id} is {job.state}: only queued or running jobs can be paused")
        self.wake.set()
        return job

    def resume(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self.lock:
            if not job.state.resumable:
                raise UserError(f"job {job_id} is {job.state}: only paused, cancelled or failed jobs can be resumed")
            if job.kind == TASTE_JOB_KIND:
                job.events_path.unlink(missing_ok=True)  # it starts over: a stream shows only the new run's steps
            job.set_state(JobState.QUEUED, resume=True, queued_at=now(), error=None, finished=None)
        self.wake.set()
        return job

    # ------------------------------------------------------------------ the watcher
    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                self._tick()
            except Exception:  # the watcher must survive anything (a full disk, a vanished dir)
                log.exception("job watcher")
            self.wake.wait(self.poll_s)
            self.wake.clear()

    def _tick(self) -> None:
        with self.lock:
            if self._closing.is_set():
                return
            job = self.running
            if job is not None:
                code = job.process.poll() if job.process is not None else -1
                if code is None:
                    if job.stop_requested == "pause" and not (job.dir / STOP_FILE).exists():
                        # run_grpo clears a stale STOP file when it starts: a pause asked for while the
                        # process was still starting up is asserted again until the run sees it.
                        atomic_write_text(job.dir / STOP_FILE, "pause requested by the host\n")
                    return
                self._finish(job, code)
                self.running = None
            queue = self.queue()
            if queue:
                self._launch(queue[0])

    def _launch(self, job: Job) -> None:
        cfg_exists = (job.dir / RUN_CONFIG_FILE).exists() or job.events_path.exists()
        try:
            (job.dir / STOP_FILE).unlink()
        except FileNotFoundError:
            pass
        # A taste tune starts over (it cannot continue mid-run): its old step lines must not be streamed
        # as the new run's.
        for stale in (RESULT_FILE, ERROR_FILE) + ((EVENTS_FILE,) if job.kind == TASTE_JOB_KIND else ()):
            try:
                (job.dir / stale).unlink()
            except FileNotFoundError:
                pass
        env = dict(os.environ if self.env is None else self.env)
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        # The `training` package registers this command; the host only knows its name (engine.api).
        cmd = [self.python, "-m", "engine.cli", JOB_PROCESS_COMMAND, str(job.dir.resolve()),
               "--parent-pid", str(os.getpid())]
        if cfg_exists or job.data.get("resume"):
            cmd.append("--resume")
        job.log_file = open(job.dir / LOG_FILE, "ab")
        job.log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[1:])}\n".encode())
        job.log_file.flush()
        try:
            job.process = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=job.log_file,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._close_log(job)
            job.set_state(JobState.FAILED, error=f"cannot start the training process: {exc}", finished=now())
            return
        job.stop_requested = None
        job.set_state(JobState.RUNNING, started=as_time(job.data.get("started")) or now(), pid=job.process.pid,
                      attempts=(as_count(job.data.get("attempts")) or 0) + 1, finished=None, error=None)
        self.running = job
        log.info("job %s started (pid %d)", job.id, job.process.pid)

    def _finish(self, job: Job, code: int) -> None:
        self._close_log(job)
        job.process = None
        result = read_json_object(job.dir / RESULT_FILE)
        error = read_json_object(job.dir / ERROR_FILE)
        requested = job.stop_requested
        job.stop_requested = None
        extra = {"finished": now(), "pid": None, "exit_code": code}
        if requested == "cancel":
            job.set_state(JobState.CANCELLED, **extra)
        elif code == 0 and result is not None:
            extra["result"] = result
            stopped = result.get("stopped_by")
            steps = as_count(job.data["config"].get("steps")) or as_count(result.get("steps_total")) or 0
            if stopped == "stopped" and (as_count(result.get("steps_done")) or 0) < steps:
                job.set_state(JobState.PAUSED, **extra)
            else:
                job.set_state(JobState.COMPLETED, **extra)
        else:
            message = (error or {}).get("error") if isinstance((error or {}).get("error"), str) else None
            job.set_state(JobState.FAILED, error=message or _exit_reason(code), **extra)
        log.info("job %s ended: %s", job.id, job.state)

    @staticmethod
    def _close_log(job: Job) -> None:
        if job.log_file is not None:
            try:
                job.log_file.close()
            except OSError:
                pass
            job.log_file = None


def _exit_reason(code: int) -> str:
    """What ended a job process that left no error report: the signal that killed it, or its status."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory, or killed by hand?)" if -code == signal.SIGKILL else ""
        return f"the training process was killed by {name}{hint}; see {LOG_FILE}"
    return f"the training process exited with status {code} without reporting an error; see {LOG_FILE}"


def _terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the job's process group (render workers included); SIGKILL after `timeout`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    if timeout <= 0:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def _kill_stale(job: Job) -> None:
    """A job process left over from a host that died (it normally exits with its host): stop it."""
    pid = job.data.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return
    if f"engine.cli {JOB_PROCESS_COMMAND}" not in cmdline or str(job.dir.resolve()) not in cmdline:
        return  # the pid was reused by something else
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.05)
