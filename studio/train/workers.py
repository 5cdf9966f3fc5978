"""Worker jobs of the Train panel (each on its own QThread; results reach the UI as queued signals).

- `EventsWatcher`: follows GET /v1/jobs/ID/events; closing it only stops listening (the job goes on).
- `CompareJob`: the same prompts continued by the base and the tuned model, for a blind A/B test.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Signal

from engine.host_client import HostClient, HostError, decode_midi
from engine.job_api import JobDone
from studio.host.workers import StreamWorker, Worker


class EventsWatcher(StreamWorker):
    """Emits every line of a job's event stream (`engine.job_api`): `event` the `JobStep` records and
    `JobStateEvent`s, `done` the `JobDone` line."""

    event = Signal(object)
    done = Signal(object)

    def __init__(self, client: HostClient, job_id: str) -> None:
        super().__init__("train-events")
        self.client = client
        self.job_id = job_id

    def run(self) -> None:
        stream = self.client.job_events(self.job_id)
        if not self._hold(stream):
            return
        try:
            for ev in stream:
                if self.cancelled:
                    return
                if isinstance(ev, JobDone):
                    self.done.emit(ev)
                else:
                    self.event.emit(ev)
        except HostError:
            if not self.cancelled:
                raise
        finally:
            stream.close()


class CompareJob(Worker):
    """For each prompt (MIDI bytes, or None for a procedural one; or a function giving them, called on
    the worker): one continuation by the base model and one by the tuned model with the same seed. The
    host's active model is switched for each and put back afterwards (the host has no per-request model). `result`: a list of pairs
    {"prompt": bytes|None, "base": {"midi": b64, "notes": [...]}, "tuned": {...}}."""

    result = Signal(object)

    def __init__(self, client: HostClient, base: str, tuned: str,
                 prompts: list[bytes | None] | Callable[[], list[bytes | None]], *, bars: int = 2,
                 seed: int = 1, max_new_tokens: int = 512, restore: str | None = None) -> None:
        super().__init__("train-compare")
        self.client, self.base, self.tuned, self.prompts = client, base, tuned, prompts
        self.bars, self.seed, self.max_new_tokens = bars, seed, max_new_tokens
        self.restore = restore

    def _generate(self, prompt: bytes | None, seed: int) -> dict:
        stream = self.client.generate(prompt, candidates=1, bars=self.bars, seed=seed, score=False,
                                      max_new_tokens=self.max_new_tokens, first_note=prompt is None)
        done = stream.wait()
        cand = done.candidates[0]
        return {"midi": cand.midi, "notes": decode_midi(cand.midi).notes, "model": done.model.model_dump()}

    def run(self) -> None:
        if callable(self.prompts):
            self.prompts = self.prompts()
        total = 2 * len(self.prompts)
        outputs: dict[str, list[dict]] = {}
        try:
            for k, (role, path) in enumerate((("base", self.base), ("tuned", self.tuned))):
                self.progress.emit(f"Loading the {role} model…", k * len(self.prompts) / total)
                self.client.activate(path)
                outs = []
                for i, prompt in enumerate(self.prompts):
                    if self.cancelled:
                        return
                    self.progress.emit(f"{role.capitalize()} model: continuation {i + 1}/{len(self.prompts)}",
                                       (k * len(self.prompts) + i) / total)
                    outs.append(self._generate(prompt, self.seed + i))
                outputs[role] = outs
        finally:
            if self.restore:
                try:
                    self.client.activate(self.restore)
                except HostError:
                    pass
        pairs = [{"prompt": p, "base": b, "tuned": t}
                 for p, b, t in zip(self.prompts, outputs["base"], outputs["tuned"])]
        self.result.emit(pairs)
