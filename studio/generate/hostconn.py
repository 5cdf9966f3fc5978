"""The studio's connection to the policy host: an embedded local host (subprocess on 127.0.0.1, CPU)
or a remote one (URL + bearer token). Starting and health checks run on a worker thread."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal

from engine.host_client import HostClient, HostError, LocalHost

log = logging.getLogger(__name__)

LOCAL, REMOTE = "local", "remote"


class _Starter(QObject):
    """Starts a LocalHost / checks a remote host on its own QThread."""

    ready = Signal(object, object, object)  # client, health dict, LocalHost or None
    failed = Signal(str)

    def __init__(self, mode: str, model: str | None, maa: str | None, url: str, token: str,
                 startup_timeout: float) -> None:
        super().__init__()
        self.mode, self.model, self.maa, self.url, self.token = mode, model, maa, url, token
        self.startup_timeout = startup_timeout
        self.local: LocalHost | None = None
        self.abandoned = threading.Event()

    def run(self) -> None:
        try:
            if self.mode == LOCAL:
                local = LocalHost(self.model, device="cpu", maa=self.maa, startup_timeout=self.startup_timeout)
                self.local = local
                local.start()
                client = local.client()
            else:
                local = None
                client = HostClient(self.url, self.token or None)
            health = client.health()
        except HostError as exc:
            self.failed.emit(_first_line(str(exc)))
            return
        except Exception as exc:  # OSError spawning, bad URL, ...
            self.failed.emit(_first_line(f"{type(exc).__name__}: {exc}"))
            return
        if self.abandoned.is_set():  # the studio moved on (reconnect / shutdown) meanwhile
            client.close()
            if local is not None:
                local.stop()
            return
        self.ready.emit(client, health, local)


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    # A dying local host puts the interesting line (its UserError) last.
    head = lines[0]
    tail = lines[-1] if len(lines) > 1 else ""
    return f"{head} — {tail}"[:400] if tail and tail not in head else head[:400]


class HostConnection(QObject):
    """State: "disconnected" → "connecting" → "connected" (or "failed" with `error`)."""

    changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.mode = LOCAL
        self.model_dir: str | None = None
        self.maa_path: str | None = None
        self.url = ""
        self.token = ""
        self.startup_timeout = 240.0
        self.state = "disconnected"
        self.error: str | None = None
        self.client: HostClient | None = None
        self.health: dict | None = None
        self.local: LocalHost | None = None
        self._thread: QThread | None = None
        self._starter: _Starter | None = None
        self.connect_started: float | None = None  # monotonic time of the current connection attempt

    # ------------------------------------------------------------------ configuration
    def configure(self, mode: str, *, model_dir: str | None = None, maa_path: str | None = None,
                  url: str = "", token: str = "") -> None:
        if mode not in (LOCAL, REMOTE):
            raise ValueError(f"unknown host mode {mode!r}")
        self.mode, self.model_dir, self.maa_path, self.url, self.token = mode, model_dir or None, \
            maa_path or None, url.strip(), token.strip()

    @property
    def connected(self) -> bool:
        return self.state == "connected" and self.client is not None

    @property
    def busy(self) -> bool:
        return self.state == "connecting"

    # ------------------------------------------------------------------ lifecycle
    def connect_host(self) -> None:
        """(Re)connect with the current configuration; `changed` reports progress."""
        self.disconnect_host()
        if self.mode == REMOTE and not self.url:
            self._fail("no host URL set")
            return
        if self.mode == LOCAL and self.model_dir is not None and not Path(self.model_dir).is_dir():
            self._fail(f"model directory not found: {self.model_dir}")
            return
        self.state, self.error = "connecting", None
        self.connect_started = time.monotonic()
        starter = _Starter(self.mode, self.model_dir, self.maa_path, self.url, self.token, self.startup_timeout)
        thread = QThread()
        thread.setObjectName("host-connect")
        starter.moveToThread(thread)
        thread.started.connect(starter.run)
        starter.ready.connect(self._on_ready)
        starter.failed.connect(self._on_failed)
        starter.ready.connect(thread.quit)
        starter.failed.connect(thread.quit)
        self._thread, self._starter = thread, starter
        thread.start()
        self.changed.emit()

    def _on_ready(self, client, health, local) -> None:
        if self.sender() is not self._starter:
            client.close()
            if local is not None:
                local.stop()
            return
        self.client, self.health, self.local = client, health, local
        self.state = "connected"
        self.changed.emit()

    def _on_failed(self, reason: str) -> None:
        if self.sender() is not self._starter:
            return
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        self.state, self.error = "failed", reason
        self.client = self.health = None
        self.changed.emit()

    def refresh_health(self) -> dict | None:
        """Re-read /v1/health (quick; the UI calls it after the MAA changes)."""
        if self.client is None:
            return None
        try:
            self.health = self.client.health()
        except HostError as exc:
            self._fail(str(exc))
            return None
        self.changed.emit()
        return self.health

    def disconnect_host(self, wait_ms: int = 500) -> None:
        if self._starter is not None:
            self._starter.abandoned.set()
            if self._thread is not None and self._thread.isRunning():
                # A local host still starting: stop its process so the thread returns promptly.
                if self._starter.local is not None and self._starter.local.process is not None:
                    try:
                        self._starter.local.process.terminate()
                    except OSError:
                        pass
                self._thread.wait(wait_ms)
        if self.client is not None:
            self.client.close()
        if self.local is not None:
            self.local.stop()
        self.client = self.health = self.local = None
        if self.state != "disconnected":
            self.state = "disconnected"
            self.changed.emit()

    def shutdown(self) -> None:
        self.disconnect_host(wait_ms=5000)

    # ------------------------------------------------------------------ descriptions
    def startup_detail(self) -> str:
        """While connecting: how long it has taken, and the local host's latest log line (what it is doing)."""
        if not self.busy or self.connect_started is None:
            return ""
        text = f"{time.monotonic() - self.connect_started:.0f} s"
        local = self._starter.local if self._starter is not None else None
        lines = [line.strip() for line in (local.log_tail(600) if local is not None else "").splitlines()
                 if line.strip()]
        return f"{text} — {lines[-1][:160]}" if lines else text

    def maa_status(self) -> str:
        """"available", "random-weights", "missing" or "unknown" (not connected)."""
        if not self.health:
            return "unknown"
        return str(self.health.get("maa", {}).get("status", "missing"))

    def maa_reason(self) -> str:
        if not self.health:
            return ""
        return str(self.health.get("maa", {}).get("reason") or "")

    def model_name(self) -> str:
        if not self.health:
            return ""
        model = self.health.get("model", {}) or {}
        path = model.get("path")
        name = Path(path).name if path else "in-memory"
        params = model.get("parameters")
        return f"{name} ({params / 1e6:.1f} M params)" if params else name

    def model_version(self) -> dict:
        model = (self.health or {}).get("model", {}) or {}
        return {k: model.get(k) for k in ("path", "parameters", "layers", "hidden_size", "context_length")}

    def device(self) -> str:
        """The host's device, plus its decoding weights when they are not the exact ones (e.g. "cpu int8")."""
        health = self.health or {}
        weights = health.get("decode_weights")
        device = str(health.get("device", "?"))
        return f"{device} {weights}" if weights and weights != "model" else device

    def describe(self) -> str:
        where = "local host" if self.mode == LOCAL else f"remote {self.url}"
        if self.state == "connecting":
            return f"Connecting to the {where}…" if self.mode == REMOTE else "Starting the local host (CPU)…"
        if self.state == "failed":
            return f"Host unavailable: {self.error}"
        if self.state == "disconnected":
            return "Not connected — the local host starts on first use" if self.mode == LOCAL else \
                f"Not connected ({self.url or 'no URL'})"
        return f"● {where} · {self.device()} · {self.model_name()}"
