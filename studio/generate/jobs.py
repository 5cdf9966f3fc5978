"""Worker jobs of the Generate panel. Each runs on its own QThread; signals reach the UI queued.

- `GenerationJob`: one /v1/generate request, streamed (note → candidate → done events).
- `SketchScoreJob`: MAA scores of the sketch per 10-s window (/v1/score per window).
- `SearchJob`: reward-guided beam search (see studio.generate.search).
- `MaaDownloadJob`: fetch the MAA checkpoint into the HF cache with byte progress.

Cancelling sets a flag and closes the HTTP stream; the host stops decoding when the stream closes.
"""

from __future__ import annotations

import threading
import time

from PySide6.QtCore import QObject, QThread, Signal

from engine.errors import first_line
from engine.host_client import HostClient, HostError, decode_midi
from engine.maa_weights import AXES, WINDOW_SECONDS
from engine.music import Clip, MidiFileError, Note


def note_from_json(d: dict) -> Note:
    return Note(int(d["start"]), int(d["pitch"]), max(1, int(d["duration"])), int(d.get("velocity", 80)))


class Job(QObject):
    """Base: a QObject moved to its own QThread; `finished_job` fires last, whatever happened."""

    failed = Signal(str)
    progress = Signal(str, float)  # message, fraction (-1: unknown)
    finished_job = Signal()

    def __init__(self, name: str) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName(name)
        self.moveToThread(self._thread)
        self._thread.started.connect(self._main)
        self.finished_job.connect(self._thread.quit)
        self.started_at: float | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, ms: int = 30000) -> bool:
        return self._thread.wait(ms)

    def _main(self) -> None:
        try:
            self.run()
        except Exception as exc:  # every failure is reported, never raised into Qt
            if not self.cancelled:
                self.failed.emit(first_line(exc))
        finally:
            self.finished_job.emit()

    def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class StreamJob(Job):
    """A job that reads one streamed host response; cancelling closes the stream, which breaks the
    blocking read at once (and makes the host stop that request's work)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._stream = None
        self._lock = threading.Lock()

    def cancel(self) -> None:
        super().cancel()
        with self._lock:
            stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass

    def _hold(self, stream) -> bool:
        """Keep `stream` for cancel(); False (and the stream closed) when already cancelled."""
        with self._lock:
            self._stream = stream
        if self.cancelled:
            stream.close()
            return False
        return True


class GenerationJob(StreamJob):
    """Streams one generation. `payload` is the /v1/generate JSON body."""

    started_request = Signal(object)  # the host's "started" event
    note = Signal(int, object)  # candidate index, Note
    candidate = Signal(int, object)  # candidate index, the host's candidate dict (+ "notes_list")
    done = Signal(object)  # the done event
    cancelled_job = Signal()

    def __init__(self, client: HostClient, payload: dict) -> None:
        super().__init__("generate")
        self.client = client
        self.payload = payload
        self.first_note_at: float | None = None

    def run(self) -> None:
        stream = self.client.generate_raw(self.payload)
        if not self._hold(stream):
            self.cancelled_job.emit()
            return
        try:
            for event in stream:
                if self.cancelled:
                    break
                kind = event.get("event")
                if kind == "note":
                    if self.first_note_at is None:
                        self.first_note_at = time.monotonic()
                    self.note.emit(int(event["candidate"]), note_from_json(event["note"]))
                elif kind == "started":
                    self.started_request.emit(event)
                elif kind == "candidate":
                    event = dict(event)
                    try:
                        event["notes_list"] = decode_midi(event["midi"]).notes
                    except (MidiFileError, ValueError, KeyError):
                        event["notes_list"] = None
                    self.candidate.emit(int(event["candidate"]), event)
                elif event.get("done"):
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


class SketchScoreJob(Job):
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
                random_weights = random_weights or bool(r.get("random_weights"))
                scores = {k: float(r[k]) for k in AXES}
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


class MaaDownloadJob(Job):
    """Download checkpoint.pt from the Hugging Face hub (engine.maa_weights) with byte progress."""

    done = Signal(str)  # local path

    def __init__(self) -> None:
        super().__init__("maa-download")

    def run(self) -> None:
        from tqdm.auto import tqdm

        from engine.maa_weights import (
            HF_REPO_ID,
            MAA_DOWNLOAD_BYTES,
            MAAUnavailable,
            download_weights,
        )

        job = self

        class QtProgress(tqdm):  # hf_hub_download reports bytes through a tqdm class
            def __init__(self, *args, **kwargs):
                kwargs["disable"] = False
                kwargs["file"] = open("/dev/null", "w")  # noqa: SIM115 - tqdm writes somewhere; not stderr
                super().__init__(*args, **kwargs)

            def update(self, n=1):
                out = super().update(n)
                if job.cancelled:
                    raise RuntimeError("download cancelled")
                total = self.total or MAA_DOWNLOAD_BYTES
                job.progress.emit(f"Downloading MAA weights: {self.n / 1e6:.0f} of {total / 1e6:.0f} MB",
                                  min(1.0, self.n / total))
                return out

        self.progress.emit(f"Contacting huggingface.co for {HF_REPO_ID} ({MAA_DOWNLOAD_BYTES / 1e6:.0f} MB)…", 0.0)
        try:
            path = download_weights(QtProgress)
        except MAAUnavailable as exc:  # offline, DNS, HTTP errors, cancel
            raise RuntimeError(f"{exc}. Check the internet connection, or choose a local checkpoint.pt / HF folder") from None
        self.done.emit(str(path))


class SearchJob(Job):
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
