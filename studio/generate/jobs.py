"""Worker jobs of the Generate panel. Each runs on its own QThread; signals reach the UI queued.

- `GenerationJob`: one /v1/generate request, streamed (note → candidate → done events).
- `SketchScoreJob`: MAA scores of the sketch per 10-s window (/v1/score per window).
- `SearchJob`: reward-guided beam search (see studio.generate.search).

Cancelling sets a flag and closes the HTTP stream; the host stops decoding when the stream closes.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Signal

from engine.api import (
    GenerateRequest,
    GenerationCandidate,
    GenerationDone,
    GenerationNote,
    GenerationStarted,
    StreamedNote,
)
from engine.host_client import HostClient, HostError, decode_midi
from engine.maa_weights import AXES, WINDOW_SECONDS
from engine.music import Clip, MidiFileError, Note
from studio.host.workers import StreamWorker, Worker


def note_from_event(n: StreamedNote) -> Note:
    return Note(n.start, n.pitch, max(1, n.duration), n.velocity)


class GenerationJob(StreamWorker):
    """Streams one generation (`request`, the contract's /v1/generate request)."""

    started_request = Signal(object)  # GenerationStarted
    note = Signal(int, object)  # candidate index, Note
    candidate = Signal(int, object, object)  # candidate index, GenerationCandidate, its notes (None: unreadable)
    done = Signal(object)  # GenerationDone
    cancelled_job = Signal()

    def __init__(self, client: HostClient, request: GenerateRequest) -> None:
        super().__init__("generate")
        self.client = client
        self.request = request
        self.first_note_at: float | None = None

    def run(self) -> None:
        stream = self.client.generate_request(self.request)
        if not self._hold(stream):
            self.cancelled_job.emit()
            return
        try:
            for event in stream:
                if self.cancelled:
                    break
                if isinstance(event, GenerationNote):
                    if self.first_note_at is None:
                        self.first_note_at = time.monotonic()
                    self.note.emit(event.candidate, note_from_event(event.note))
                elif isinstance(event, GenerationStarted):
                    self.started_request.emit(event)
                elif isinstance(event, GenerationCandidate):
                    try:
                        notes = decode_midi(event.midi).notes
                    except (MidiFileError, ValueError):
                        notes = None
                    self.candidate.emit(event.candidate, event, notes)
                elif isinstance(event, GenerationDone):
                    self.done.emit(event)
        except HostError:
            if not self.cancelled:
                raise
        finally:
            stream.close()
        if self.cancelled:
            self.cancelled_job.emit()


def score_windows(clip: Clip, window_s: float = WINDOW_SECONDS) -> list[tuple[int, int, float]]:
    """(start tick, end tick, seconds) of each MAA window of the clip (the last one may be shorter)."""
    total = clip.duration_seconds
    out = []
    t = 0.0
    while t < total - 1e-6:
        end = min(t + window_s, total)
        out.append((clip.tick_at(t), clip.tick_at(end) if end < total else clip.end_tick, end - t))
        t += window_s
    return out


class SketchScoreJob(Worker):
    """MAA scores of the sketch: one /v1/score request per 10-s window, then the length-weighted mean
    (which is how MAA itself averages a long clip's windows)."""

    window = Signal(int, object)  # window index, {"start", "end", "seconds", "scores"}
    done = Signal(object)  # {"windows": [...], "overall": {...}, "random_weights": bool}

    def __init__(self, client: HostClient, clip: Clip, serial: int) -> None:
        super().__init__("sketch-score")
        self.client, self.clip, self.serial = client, clip, serial

    def run(self) -> None:
        windows = score_windows(self.clip)
        results = []
        random_weights = False
        for i, (start, end, seconds) in enumerate(windows):
            if self.cancelled:
                return
            part = self.clip.slice_ticks(start, end, shift_to_zero=True)
            if not part.notes:
                entry = {"start": start, "end": end, "seconds": seconds, "scores": None}
            else:
                r = self.client.score_midi(part.to_midi_bytes())
                random_weights = random_weights or r.random_weights
                scores = r.axes()
                entry = {"start": start, "end": end, "seconds": seconds, "scores": scores}
            results.append(entry)
            self.window.emit(i, entry)
            self.progress.emit(f"Scoring the sketch: window {i + 1} of {len(windows)}", (i + 1) / len(windows))
        scored = [w for w in results if w["scores"] is not None]
        overall = None
        if scored:
            total = sum(w["seconds"] for w in scored)
            overall = {k: sum(w["scores"][k] * w["seconds"] for w in scored) / total for k in AXES}
        if not self.cancelled:
            self.done.emit({"windows": results, "overall": overall, "random_weights": random_weights,
                            "serial": self.serial})


class SearchJob(Worker):
    """Reward-guided beam search (studio.generate.search.beam_search) on a worker thread."""

    step = Signal(int, object)  # steps done, list[Beam] (best first)
    done = Signal(object)  # SearchResult
    cancelled_job = Signal()

    def __init__(self, client: HostClient, clip: Clip, at_tick: int, **kwargs) -> None:
        super().__init__("search")
        self.client, self.clip, self.at_tick, self.kwargs = client, clip, at_tick, kwargs

    def run(self) -> None:
        from studio.generate.search import beam_search

        bars = self.kwargs["bars"]

        def on_step(steps: int, beams) -> None:
            self.step.emit(steps, [type(b)(list(b.notes), b.reward, b.scores) for b in beams])
            self.progress.emit(f"Search: bar {steps} of {bars}", steps / bars)

        self.progress.emit(f"Search: bar 1 of {bars}…", 0.0)
        result = beam_search(self.client, self.clip, self.at_tick, should_stop=lambda: self.cancelled,
                             on_step=on_step, **self.kwargs)
        if self.cancelled:
            self.cancelled_job.emit()
        else:
            self.done.emit(result)
