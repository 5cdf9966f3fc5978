"""Downloads the studio makes for its host: the MAA weights (`engine.maa_weights`) fetched into the
Hugging Face cache with byte progress, and whether a file the musician names can be MAA weights. `MaaDownloads`, owned by the main window, runs one download at a
time for any panel and says how it goes; the local host is restarted with the weights by whoever listens
to `done` (the Generate panel's MAA notice)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from engine.maa_weights import MAACheckpointError, check_checkpoint

from studio.host.workers import Worker


def maa_file_problem(path: str) -> str | None:
    """Why `path` cannot be MAA weights, in one line naming the file; None when it can (only the file's
    framing is read: quick, no torch)."""
    try:
        check_checkpoint(path)
    except MAACheckpointError as exc:
        return str(exc).splitlines()[0] if str(exc) else f"{path} is not an MAA checkpoint"
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


class MaaDownloadWorker(Worker):
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


class MaaDownloads(QObject):
    """One MAA download at a time, started from any panel; its progress, result and end as signals."""

    started = Signal()
    progress = Signal(str, float)  # message, fraction
    done = Signal(str)  # the checkpoint's local path
    failed = Signal(str)
    finished = Signal()  # last, whatever happened

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._worker: MaaDownloadWorker | None = None

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self) -> bool:
        """Start the download; False when one is already running."""
        if self._worker is not None:
            return False
        worker = MaaDownloadWorker()
        worker.progress.connect(self.progress)
        worker.done.connect(self.done)
        worker.failed.connect(self.failed)
        worker.finished_job.connect(self._on_finished)
        self._worker = worker
        worker.start()
        self.started.emit()
        return True

    def _on_finished(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.wait(2000)
        self.finished.emit()

    def cancel(self, wait_ms: int = 0) -> None:
        if self._worker is not None:
            self._worker.cancel()
            if wait_ms:
                self._worker.wait(wait_ms)
