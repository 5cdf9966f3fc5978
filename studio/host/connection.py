"""The studio's connection to the policy host: an embedded local host (subprocess on 127.0.0.1, CPU)
or a remote one (URL + bearer token). Starting and health checks run on a worker thread. One connection
per studio (the main window owns it and hands it to the panels); where it points is kept in the settings,
and `ensure` runs a panel's action once the host is up."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal

from engine.api import HealthReply, HostLimitsInfo, MaaStatus, ModelInfo
from engine.host_client import HostClient, HostError, LocalHost
from studio.host.downloads import maa_file_problem

log = logging.getLogger(__name__)

LOCAL, REMOTE = "local", "remote"
MAA_UNKNOWN = "unknown"  # no host has answered yet: its MAA status (`engine.api.MaaStatus`) is not known


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
        self.health: HealthReply | None = None
        self.local: LocalHost | None = None
        self._thread: QThread | None = None
        self._starter: _Starter | None = None
        self.connect_started: float | None = None  # monotonic time of the current connection attempt
        # Actions waiting for the connection, one per owner (a second click while connecting replaces the
        # first): (action, on_failed(reason) or None).
        self._pending: dict[object, tuple] = {}

    # ------------------------------------------------------------------ configuration
    def configure(self, mode: str, *, model_dir: str | None = None, maa_path: str | None = None,
                  url: str = "", token: str = "") -> None:
        if mode not in (LOCAL, REMOTE):
            raise ValueError(f"unknown host mode {mode!r}")
        self.mode, self.model_dir, self.maa_path, self.url, self.token = mode, model_dir or None, \
            maa_path or None, url.strip(), token.strip()

    def load_settings(self, settings) -> str | None:
        """Where the host is, as the settings keep it. A saved MAA file that cannot be MAA weights is dropped
        (the host would fail on every start): returns why, for the musician; None otherwise."""
        note = None
        maa_path = str(settings.value("generate/maaPath", "") or "") or None
        if maa_path and (problem := maa_file_problem(maa_path)) is not None:
            # Saved before files were checked (or since changed).
            maa_path = None
            settings.setValue("generate/maaPath", "")
            note = f"{problem}: the local host starts without it (Host… to choose another)"
        self.configure(str(settings.value("generate/hostMode", LOCAL)),
                       model_dir=str(settings.value("generate/modelDir", "") or "") or None,
                       maa_path=maa_path,
                       url=str(settings.value("generate/remoteUrl", "") or ""),
                       token=str(settings.value("generate/remoteToken", "") or ""))
        return note

    def save_settings(self, settings) -> None:
        settings.setValue("generate/hostMode", self.mode)
        settings.setValue("generate/modelDir", self.model_dir or "")
        settings.setValue("generate/maaPath", self.maa_path or "")
        settings.setValue("generate/remoteUrl", self.url)
        settings.setValue("generate/remoteToken", self.token)

    def ensure(self, action, owner: object, on_failed=None) -> bool:
        """True when connected; otherwise connect (unless already connecting) and run `action` once the host
        is up — after every listener of `changed` has seen it — or `on_failed(reason)` if it does not come up.
        One waiting action per `owner`."""
        if self.connected:
            return True
        self._pending[owner] = (action, on_failed)
        if not self.busy:
            self.connect_host()
        return False

    def forget_pending(self, owner: object) -> None:
        self._pending.pop(owner, None)

    def _emit_changed(self) -> None:
        self.changed.emit()
        if self.connected:
            pending, self._pending = self._pending, {}
            for action, _on_failed in pending.values():
                action()
        elif self.state == "failed":  # still failed once every listener has seen it (none reconnected)
            pending, self._pending = self._pending, {}
            for _action, on_failed in pending.values():
                if on_failed is not None:
                    on_failed(self.error or "")

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
        self._emit_changed()

    def _on_failed(self, reason: str) -> None:
        if self.sender() is not self._starter:
            return
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        self.state, self.error = "failed", reason
        self.client = self.health = None
        self._emit_changed()

    def refresh_health(self) -> HealthReply | None:
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
        self._pending = {}
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

    def maa_status(self) -> MaaStatus | str:
        """The host's `MaaStatus`, or MAA_UNKNOWN (not connected)."""
        return self.health.maa.status if self.health else MAA_UNKNOWN

    def maa_usable(self) -> bool:
        """The host scores candidates (real or random weights)."""
        return self.health is not None and self.health.maa.status.scores

    def maa_reason(self) -> str:
        return (self.health.maa.reason or "") if self.health else ""

    def body_limit(self) -> int:
        """The largest request body the host accepts (the contract's default before it has said)."""
        return self.health.limits.body_bytes if self.health else HostLimitsInfo().body_bytes

    def model_name(self) -> str:
        if not self.health:
            return ""
        model = self.health.model
        name = Path(model.path).name if model.path else "in-memory"
        return f"{name} ({model.parameters / 1e6:.1f} M params)" if model.parameters else name

    def model_version(self) -> dict:
        model = self.health.model if self.health else ModelInfo()
        return model.model_dump(include={"path", "parameters", "layers", "hidden_size", "context_length"})

    def device(self) -> str:
        """The host's device, plus its decoding weights when they are not the exact ones (e.g. "cpu int8")."""
        if not self.health:
            return "?"
        weights, device = self.health.decode_weights, self.health.device
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
