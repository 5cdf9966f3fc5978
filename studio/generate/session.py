"""The request session of the Generate panel: one request at a time to the host (continue, regenerate
bars, reward-guided search), its candidates filled in as the host streams them, its outcome written to
the project's history. No widgets: the panel shows what the signals report."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from engine.api import GenerateRequest, GenerationCandidate, GenerationDone, GenerationStarted
from engine.music import Clip, Note
from studio.generate.history import (
    CONTINUE,
    DISCARDED,
    READY,
    SEARCH,
    STREAMING,
    Candidate,
    GenerationHistory,
    Request,
)
from studio.generate.jobs import GenerationJob, SearchJob
from studio.generate.search import reward_label


class GenerationSession(QObject):
    candidates_reset = Signal()  # `candidates` was replaced (a new request, search beams)
    note = Signal(object, object)  # Candidate, Note (streamed)
    candidate_ready = Signal(object)  # Candidate (complete, scored when asked)
    candidate_dropped = Signal(object)  # Candidate (failed/cancelled before writing a note)
    progress = Signal(int, int, str)  # value, maximum, format
    finished = Signal(str, bool)  # what happened, whether it is an error
    message = Signal(str)  # a progress line
    meter_note = Signal(str)  # the host reads the prompt with other bar lines than the sketch's (engine.meter)
    idle = Signal()  # the request's job has ended (after its outcome was reported)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.history: GenerationHistory | None = None
        self.request: Request | None = None  # the latest request of this session
        self.candidates: dict[int, Candidate] = {}  # of `request`, by index
        self._job = None
        self._span: tuple[int, int] | None = None
        self._jobs: set = set()  # every job alive (kept referenced until its thread ends)
        self.random_weights = False  # the host scores with random MAA weights

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self._job is not None

    @property
    def job(self):
        """The running request's worker (a GenerationJob or SearchJob), None when idle."""
        return self._job

    def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def shutdown(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        for job in list(self._jobs):
            job.wait(5000)
        self._jobs.clear()
        self._job = None

    def forget(self, candidate: Candidate) -> None:
        """The candidate left the screen (accepted, discarded): stream events no longer reach it."""
        self.candidates = {k: v for k, v in self.candidates.items() if v is not candidate}

    def show(self, candidates: list[Candidate]) -> None:
        """Candidates restored from the history become the current ones."""
        self.candidates = {c.index: c for c in candidates}

    # ------------------------------------------------------------------ requests
    def start_generation(self, client, request: Request, body: GenerateRequest,
                         span: tuple[int, int] | None) -> None:
        """Continue or infill: one streamed /v1/generate request (`body`)."""
        self._begin(request)
        for i in range(body.candidates):
            self.candidates[i] = Candidate(index=i, request=request.id, mode=request.mode, span=span,
                                           placement=request.placement)
        self.candidates_reset.emit()
        job = GenerationJob(client, body)
        job.started_request.connect(self._on_started)
        job.note.connect(self._on_note)
        job.candidate.connect(self._on_candidate)
        job.done.connect(self._on_done)
        job.failed.connect(self._on_failed)
        job.cancelled_job.connect(self._on_cancelled)
        self._run(job)
        self.progress.emit(0, body.candidates, "%v of %m candidates complete")

    def start_search(self, client, request: Request, clip: Clip, at: int, span: tuple[int, int], **kwargs) -> None:
        self._begin(request)
        self._span = span
        self.candidates_reset.emit()
        job = SearchJob(client, clip, at, **kwargs)
        job.step.connect(self._on_search_step)
        job.done.connect(self._on_search_done)
        job.failed.connect(self._on_failed)
        job.progress.connect(self._on_progress)
        job.cancelled_job.connect(self._on_cancelled)
        self._run(job)
        self.progress.emit(0, 1000, "%p%")

    def _begin(self, request: Request) -> None:
        self.stop()
        self.request = request
        self.history.add(request)
        self.candidates = {}

    def _run(self, job) -> None:
        self._job = job
        self._jobs.add(job)
        job.finished_job.connect(self._on_job_finished)
        job.start()

    def _on_job_finished(self) -> None:
        job = self.sender()
        if job is None:
            return
        job.wait(2000)
        self._jobs.discard(job)
        if job is self._job:
            self._job = None
            self.idle.emit()

    def _current(self) -> bool:
        return self.sender() is self._job

    def _save(self) -> None:
        if self.request is not None and self.history is not None:
            self.history.save(self.request)

    # ------------------------------------------------------------------ streamed events
    def _on_started(self, event: GenerationStarted) -> None:
        note = event.meter_note
        if not self._current() or not note:
            return
        self.request.meter_note = note
        self._save()
        self.meter_note.emit(note)

    def _on_note(self, index: int, note: Note) -> None:
        if not self._current():
            return
        cand = self.candidates.get(index)
        if cand is not None:
            cand.notes.append(note)
            self.note.emit(cand, note)

    def _on_candidate(self, index: int, event: GenerationCandidate, notes: list[Note] | None) -> None:
        if not self._current():
            return
        cand = self.candidates.get(index)
        if cand is None:
            return
        if notes is not None:
            cand.notes = list(notes)
        cand.features = event.features
        cand.scores = event.scores
        cand.random_weights = bool(event.random_weights)
        cand.scores_error = event.scores_error
        cand.finished_by = event.finished_by
        cand.status = READY
        self.history.store(cand)
        done = sum(1 for c in self.candidates.values() if c.status != STREAMING)
        req = self.request
        req.candidates = done
        req.scores = [c.scores for c in sorted(self.candidates.values(), key=lambda c: c.index)]
        self._save()
        self.progress.emit(done, len(self.candidates), "%v of %m candidates complete")
        self.candidate_ready.emit(cand)

    def _on_done(self, event: GenerationDone) -> None:
        if not self._current():
            return
        req = self.request
        req.status = "completed"
        req.elapsed_s = event.elapsed_s
        if "model" in event:
            req.model = event.model.model_dump(include={"path", "parameters", "layers", "hidden_size",
                                                        "context_length"})
        self._save()
        empty = [c for c in self.candidates.values() if not c.notes]
        for cand in self.candidates.values():
            if cand.status == STREAMING:
                cand.status = READY
                self.candidate_ready.emit(cand)
        n = len(self.candidates)
        text = f"{n - len(empty)} of {n} candidates ready"
        if empty:
            text += f" ({len(empty)} wrote no notes)"
        if req.elapsed_s is not None:
            text += f" in {req.elapsed_s:.1f} s"
        self.finished.emit(text + ". Audition, compare, then accept or discard.", False)

    def _on_failed(self, reason: str) -> None:
        if not self._current():
            return
        self.request.status = "failed"
        self.request.error = reason
        self._save()
        for cand in list(self.candidates.values()):
            if cand.status == STREAMING:
                cand.status = READY if cand.notes else DISCARDED
                if cand.status == DISCARDED:
                    self.forget(cand)
                    self.candidate_dropped.emit(cand)
                else:
                    self.candidate_ready.emit(cand)
        self.finished.emit(f"Generation failed: {reason}", True)

    def _on_cancelled(self) -> None:
        if not self._current():
            return
        self.request.status = "cancelled"
        self._save()
        kept = 0
        for cand in list(self.candidates.values()):
            if cand.status != STREAMING:
                continue
            if cand.notes:
                cand.status = READY
                cand.finished_by = "cancelled"
                self.history.store(cand)
                self.candidate_ready.emit(cand)
                kept += 1
            else:
                self.forget(cand)
                self.candidate_dropped.emit(cand)
        self.finished.emit(f"Stopped; kept {kept} partial candidate(s)", False)

    # ------------------------------------------------------------------ search
    def _beams_as_candidates(self, beams, status: str) -> None:
        req = self.request
        self.candidates = {
            k: Candidate(index=k, request=req.id, mode=SEARCH, notes=list(beam.notes), scores=beam.scores,
                         reward=beam.reward, status=status, span=self._span, placement=req.placement,
                         random_weights=self.random_weights and beam.scores is not None)
            for k, beam in enumerate(beams)}
        self.candidates_reset.emit()

    def _on_search_step(self, _steps: int, beams) -> None:
        if self._current():
            self._beams_as_candidates(beams, STREAMING)

    def _on_search_done(self, result) -> None:
        if not self._current():
            return
        self._beams_as_candidates(result.beams, READY)
        for cand in self.candidates.values():
            self.history.store(cand)
        req = self.request
        req.status, req.candidates, req.steps = "completed", len(result.beams), result.steps_done
        req.stopped_by, req.elapsed_s, req.requests = result.stopped_by, round(result.elapsed_s, 3), result.requests
        req.rewards = [b.reward for b in result.beams]
        req.scores = [b.scores for b in result.beams]
        self._save()
        why = {"bars": "all bars done", "budget": "time budget spent", "cancelled": "stopped"}[result.stopped_by]
        if result.beams and result.beams[0].reward is not None:
            text = (f"Search: {result.steps_done} of {result.bars_wanted} bar(s) in {result.elapsed_s:.1f} s "
                    f"({why}, {result.requests} host requests); best reward {result.beams[0].reward:.3f}")
        else:
            text = f"Search ended ({why}) without a result"
        self.finished.emit(text, False)

    def _on_progress(self, text: str, fraction: float) -> None:
        if self._current():
            self.progress.emit(int(1000 * max(0.0, fraction)), 1000, "%p%")
            self.message.emit(text)


def describe_request(req: Request) -> str:
    """One line for the history list: the settings that made it."""
    from studio.generate.options import GenerateOptions

    if req.mode == SEARCH:
        return f"{reward_label(req.reward or '?')}, {req.beams or '?'} beams, {req.budget_s or '?'} s"
    opts = GenerateOptions()
    for k, v in req.settings.items():
        if hasattr(opts, k):
            setattr(opts, k, v)
    try:
        text = opts.describe()
    except (IndexError, KeyError, TypeError, ValueError):  # settings of a damaged file, e.g. key_root 99
        text = "?"
    if req.mode == CONTINUE and req.placement:
        from studio.generate.placement import MODES

        text += f", {MODES.get(req.placement, req.placement).split(' —')[0].lower()}"
    return text
