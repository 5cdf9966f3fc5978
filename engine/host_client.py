"""Client of the policy host (`smart serve`), for the studio, benchmarks and tests.

    with LocalHost(model_dir) as host:              # or HostClient("https://gpu-box:8765", token)
        client = host.client()
        with client.generate(prompt_midi=clip.to_midi_bytes(), candidates=4, bars=4) as stream:
            for event in stream:                    # "started", "note"…, "candidate"…, "done"
                ...
        stream.result.candidates                    # the done event's candidates (engine.api.GenerationDone)

Replies and events are the contract's models (`engine.api`: `HealthReply`, `ScoreReply`, the generation
events); requests are built from its `GenerateRequest`. Job replies and job events are `engine.job_api`'s
(`JobInfo`, `JobCheckpoint`, `JobStep`, `JobStateEvent`, `JobDone`).

Closing a stream early (leaving the `with`, `stream.close()`) closes the connection, and the host
stops decoding that request. Errors the host reports (4xx/5xx, or an "error" event mid-stream)
raise `HostError` with the host's message. Never imports Qt: the studio runs it in a worker thread.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import httpx

from engine.api import (
    TOKEN_ENV_VAR,
    GenerateRequest,
    GenerationDone,
    HealthReply,
    InfillSpan,
    Reply,
    ScoreReply,
    generation_event,
)
from engine.errors import first_line
from engine.job_api import JobCheckpoint, JobCheckpoints, JobDone, JobInfo, JobList, job_event
from engine.music import DEFAULT_BPM, Clip, MidiFileError, Note, TempoChange, TimeSignature


class HostError(RuntimeError):
    """The host refused or failed a request (status 0: it could not be reached)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return response.text.strip()[:300] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else json.dumps(detail if detail is not None else body)[:300]


def decode_midi(b64: str) -> Clip:
    """A candidate's `midi` field as a Clip, exactly as the host wrote it: ticks as in the prompt clip, its
    tempo map and meter, every note kept (`Clip.from_midi` would drop notes outside the piano range, which
    the host's features and scores still count). The one decoder of candidate MIDI (CLI, studio, tests)."""
    import symusic

    try:
        score = symusic.Score.from_midi(base64.b64decode(b64))
    except Exception as exc:  # symusic raises RuntimeError with C++ messages; base64 raises binascii.Error
        raise MidiFileError(f"unreadable candidate MIDI ({first_line(exc)})") from None
    notes = [Note(int(n.start), int(n.pitch), max(1, int(n.duration)), int(n.velocity))
             for track in score.tracks for n in track.notes]
    tempos = [TempoChange(int(t.time), round(float(t.qpm), 3)) for t in score.tempos]
    sigs = [TimeSignature(int(t.time), int(t.numerator), int(t.denominator)) for t in score.time_signatures]
    return Clip(notes, int(score.ticks_per_quarter), tempos or [TempoChange(0, DEFAULT_BPM)],
                sigs or [TimeSignature(0, 4, 4)])


class _EventStream:
    """Newline-delimited JSON events of one streamed response; iterate once. The done line is kept in
    `result`; the connection is closed once it has arrived."""

    def __init__(self, response: httpx.Response):
        self._response = response
        self.result = None

    def _parse(self, data: dict):
        """One line as the subclass reads it (the JSON object by default)."""
        return data

    def _observe(self, event) -> None:
        """Per-event hook of the subclasses (may raise HostError)."""

    def __iter__(self) -> Iterator:
        try:
            for line in self._response.iter_lines():
                if not line.strip():
                    continue
                event = self._parse(json.loads(line))
                self._observe(event)
                if event.get("done"):
                    self.result = event
                yield event
        except httpx.HTTPError as exc:
            raise HostError(f"the host connection broke: {exc}") from None
        finally:
            if self.result is not None:
                self.close()

    def close(self) -> None:
        self._response.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class GenerationStream(_EventStream):
    """The events of one /v1/generate request (`engine.api.GenerationStarted`, `GenerationNote`…,
    `GenerationCandidate`…, `GenerationDone`). Closing it before the end cancels the request on the host."""

    def __init__(self, response: httpx.Response):
        super().__init__(response)
        self.request_id: int | None = None
        self.result: GenerationDone | None = None

    def _parse(self, data: dict) -> Reply:
        return generation_event(data)

    def _observe(self, event: Reply) -> None:
        kind = event.get("event")
        if kind == "started":
            self.request_id = event.get("request_id")
        elif kind == "error":
            raise HostError(f"generation failed: {event.get('message')}", 500)

    def wait(self) -> GenerationDone:
        """Consume the remaining events; the done event."""
        for _ in self:
            pass
        if self.result is None:
            raise HostError("the host ended the stream without a result")
        return self.result


class JobEventStream(_EventStream):
    """The lines of GET /v1/jobs/ID/events (`engine.job_api`): `JobStep` records, `JobStateEvent`s, then the
    `JobDone` line. Closing it only stops listening: the job goes on."""

    def __init__(self, response: httpx.Response):
        super().__init__(response)
        self.result: JobDone | None = None

    def _parse(self, data: dict) -> Reply:
        return job_event(data)


class HostClient:
    """Synchronous client; thread-safe for concurrent requests (httpx pools connections)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # trust_env=False: a proxy from the environment must never see the token or the music.
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, trust_env=False,
                                  transport=transport, limits=httpx.Limits(max_connections=64))
        self.url = url.rstrip("/")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "HostClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------ plain requests
    def _request(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HostError(f"cannot reach the host at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise HostError(f"{method} {path}: {response.status_code} {_detail(response)}", response.status_code)
        return response.json()

    def health(self) -> HealthReply:
        return HealthReply.model_validate(self._request("GET", "/v1/health"))

    def models(self) -> dict:
        return self._request("GET", "/v1/models")

    def activate(self, path: str | os.PathLike) -> dict:
        return self._request("POST", "/v1/models/activate", json={"path": str(path)}, timeout=300.0)

    def score_midi(self, midi: bytes) -> ScoreReply:
        return ScoreReply.model_validate(
            self._request("POST", "/v1/score", json={"midi": base64.b64encode(midi).decode()}, timeout=300.0))

    def score_wav(self, audio_file: bytes) -> ScoreReply:
        return ScoreReply.model_validate(
            self._request("POST", "/v1/score", json={"wav": base64.b64encode(audio_file).decode()}, timeout=300.0))

    # ------------------------------------------------------------------ generation
    def generate(self, prompt_midi: bytes | None = None, *, candidates: int = 4, bars: int = 4,
                 temperature: float = 1.0, top_p: float = 0.95, seed: int | None = None,
                 max_new_tokens: int | None = None, at_tick: int | None = None,
                 infill: tuple[int, int] | None = None, allowed_pitches: Sequence[int] | None = None,
                 score: bool = True, first_note: bool = False,
                 temperature_factors: dict[str, float] | None = None) -> GenerationStream:
        """Start a generation; returns the open event stream (close it to cancel).
        temperature_factors None leaves the host's shipped per-family factors; {} asks for none."""
        fields: dict = {"candidates": candidates, "bars": bars, "temperature": temperature, "top_p": top_p,
                        "score": score}
        if prompt_midi is not None:
            fields["prompt_midi"] = base64.b64encode(prompt_midi).decode()
        for key, value in (("seed", seed), ("max_new_tokens", max_new_tokens), ("at_tick", at_tick),
                           ("temperature_factors", temperature_factors)):
            if value is not None:
                fields[key] = value
        if infill is not None:
            fields["infill"] = InfillSpan.model_construct(start_bar=infill[0], end_bar=infill[1])
        if allowed_pitches is not None:
            fields["allowed_pitches"] = list(allowed_pitches)
        if first_note:
            fields["first_note"] = True
        # Not checked here: the host checks every request and names what it refuses (a 422).
        return self.generate_request(GenerateRequest.model_construct(**fields))

    def generate_request(self, request: GenerateRequest) -> GenerationStream:
        """Start the generation `request` (the fields it sets are sent); returns its open event stream."""
        # No read timeout: an infill or a long decode may send nothing for a while.
        http_request = self._http.build_request("POST", "/v1/generate", json=request.body(),
                                                timeout=httpx.Timeout(30.0, read=None))
        try:
            response = self._http.send(http_request, stream=True)
        except httpx.HTTPError as exc:
            raise HostError(f"cannot reach the host at {self.url}: {exc}") from None
        if response.status_code >= 400:
            response.read()
            response.close()
            raise HostError(f"POST /v1/generate: {response.status_code} {_detail(response)}", response.status_code)
        return GenerationStream(response)

    # ------------------------------------------------------------------ training jobs (engine.host.jobs)
    def train_options(self) -> dict:
        """GET /v1/train/options: the GRPO options (name, type, bounds, default, description), presets,
        rewards (name, description, needs_maa) this host trains with, whether it has MAA weights, and under
        "taste" the options and limits (min_pairs, max_pairs, max_midi_bytes) of `start_taste_tune`."""
        return self._request("GET", "/v1/train/options")

    def start_training(self, options: dict | None = None, *, prompts_midi: Sequence[bytes] | None = None,
                       **more) -> str:
        """POST /v1/train: `options` are GRPO options by name (`engine.api.GRPOOptions`, the `smart grpo`
        options); MIDI prompts as bytes. Returns the job id."""
        payload = {**(options or {}), **more}
        if prompts_midi is not None:
            payload["prompts_midi"] = [base64.b64encode(m).decode() for m in prompts_midi]
        return self._request("POST", "/v1/train", json=payload, timeout=120.0)["job"]

    def start_taste_tune(self, pairs: Sequence[dict], options: dict | None = None, *, name: str | None = None) -> str:
        """POST /v1/taste/tune: tune the policy toward a musician's pairs. `pairs`: {"choice": "A"|"B"|"tie",
        "a": MIDI bytes, "b": MIDI bytes, "prompt": MIDI bytes | None, "source": str (optional)}; `options`
        by name (`engine.api.TasteTuneOptions`: method, steps, beta, lr, ...). Returns the job id."""
        def b64(data: bytes | None) -> str | None:
            return base64.b64encode(data).decode() if data is not None else None

        payload = {**(options or {}), "pairs": [
            {"choice": p["choice"], "a": b64(p["a"]), "b": b64(p["b"]), "prompt": b64(p.get("prompt")),
             **({"source": p["source"]} if p.get("source") else {})} for p in pairs]}
        if name is not None:
            payload["name"] = name
        return self._request("POST", "/v1/taste/tune", json=payload, timeout=120.0)["job"]

    def list_jobs(self) -> list[JobInfo]:
        """Every job on the host, oldest first (without the details of `job`)."""
        return JobList.model_validate(self._request("GET", "/v1/jobs")).jobs

    def job(self, job_id: str) -> JobInfo:
        """The job with its details: config, last step record, checkpoints, final model, result."""
        return JobInfo.model_validate(self._request("GET", f"/v1/jobs/{job_id}"))

    def job_checkpoints(self, job_id: str) -> list[JobCheckpoint]:
        return JobCheckpoints.model_validate(self._request("GET", f"/v1/jobs/{job_id}/checkpoints")).checkpoints

    def cancel_job(self, job_id: str) -> JobInfo:
        """The job in the state the cancel left it in (a running job's process has stopped)."""
        return JobInfo.model_validate(self._request("DELETE", f"/v1/jobs/{job_id}"))

    def pause_job(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate(self._request("POST", f"/v1/jobs/{job_id}/pause"))

    def resume_job(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate(self._request("POST", f"/v1/jobs/{job_id}/resume"))

    def job_events(self, job_id: str) -> JobEventStream:
        """The job's event stream (no read timeout: a step can take minutes)."""
        request = self._http.build_request("GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(30.0, read=None))
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise HostError(f"cannot reach the host at {self.url}: {exc}") from None
        if response.status_code >= 400:
            response.read()
            response.close()
            raise HostError(f"GET /v1/jobs/{job_id}/events: {response.status_code} {_detail(response)}",
                            response.status_code)
        return JobEventStream(response)


class LocalHost:
    """A `smart serve` subprocess on 127.0.0.1 with a free port and a random token.

    The token travels in the environment (not argv, which other local users can read).
    """

    def __init__(self, model: str | os.PathLike | None = None, *, device: str = "cpu",
                 maa: str | os.PathLike | None = None, extra_args: Sequence[str] = (),
                 startup_timeout: float = 180.0, python: str = sys.executable, env: dict | None = None):
        self.model = model
        self.device = device
        self.maa = maa
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.python = python
        self.env = env
        self.token = secrets.token_urlsafe(32)
        self.url: str | None = None
        self.process: subprocess.Popen | None = None
        self._dir: str | None = None

    @property
    def log_path(self) -> Path | None:
        return Path(self._dir) / "host.log" if self._dir else None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:] if self.log_path else ""
        except OSError:
            return ""

    def start(self) -> "LocalHost":
        self._dir = tempfile.mkdtemp(prefix="smart-host-")
        ready = Path(self._dir) / "ready.json"
        # --parent-pid: the host ends when this process does, however it ends (a crash, kill -9);
        # --interrupted-jobs pause: a job that ended with the studio never restarts by itself.
        cmd = [self.python, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", "0",
               "--device", self.device, "--ready-file", str(ready), "--log-level", "warning",
               "--parent-pid", str(os.getpid()), "--interrupted-jobs", "pause", *self.extra_args]
        if self.model is not None:
            cmd += ["--model", str(self.model)]
        if self.maa is not None:
            cmd += ["--maa", str(self.maa)]
        env = dict(os.environ if self.env is None else self.env)
        env[TOKEN_ENV_VAR] = self.token
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=env)
        deadline = time.monotonic() + self.startup_timeout
        try:
            while not ready.exists():
                self._check_alive()
                if time.monotonic() > deadline:
                    raise HostError(f"the local host did not start in {self.startup_timeout:.0f} s:\n{self.log_tail()}")
                time.sleep(0.05)
            port = json.loads(ready.read_text())["port"]
            self.url = f"http://127.0.0.1:{port}"
            with self.client() as client:
                while True:
                    self._check_alive()
                    try:
                        client.health()
                        break
                    except HostError as exc:
                        if exc.status or time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise HostError(f"the local host exited with status {self.process.returncode}:\n{self.log_tail()}")

    def client(self, timeout: float = 30.0) -> HostClient:
        if self.url is None:
            raise HostError("the local host is not running")
        return HostClient(self.url, self.token, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.url = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "LocalHost":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
