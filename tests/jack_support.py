"""Start a private JACK server (dummy driver, no sound card) for tests of real audio/MIDI ports.

    with jack_server() as server:      # raises JackUnavailable if jackd is missing or fails
        ...                            # JACK clients made here connect to `server.name`

The server gets a unique name; while the context is active JACK_DEFAULT_SERVER points at it
(and JACK_NO_START_SERVER keeps clients from spawning another), so rtmidi and PortAudio
clients created inside connect to it. PortAudio only sees JACK if the server was up when it
initialised, and aborts the process if it is terminated while attached to a server that has
gone away; so with `portaudio=True` (default) PortAudio is re-initialised once the server is
up, terminated before the server is stopped, and initialised again afterwards. Close every
`Player` opened inside the block before leaving it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["JackServer", "JackTestDaw", "JackUnavailable", "jack_server", "jackd_installed", "jackd_missing_reason",
           "portaudio_missing_reason"]

_START_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 5.0


class JackUnavailable(RuntimeError):
    """jackd is not installed or the test server did not come up."""


@dataclass(frozen=True)
class JackServer:
    name: str
    sample_rate: int
    period: int
    pid: int
    log_path: Path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def jackd_installed() -> bool:
    return shutil.which("jackd") is not None


def jackd_missing_reason() -> str | None:
    """Why tests that need a JACK server cannot run here (a skip reason), or None."""
    return None if jackd_installed() else "jackd is not installed (Debian/Ubuntu: apt-get install jackd2)"


def portaudio_missing_reason() -> str | None:
    """Why tests that need PortAudio (real audio devices) cannot run here, or None."""
    from engine.playback import AudioUnavailable, _sounddevice

    try:
        _sounddevice()
    except AudioUnavailable as exc:
        return f"{exc} (Debian/Ubuntu: apt-get install libportaudio2)"
    return None


def _server_running(name: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        return False
    if shutil.which("jack_wait"):
        check = subprocess.run(["jack_wait", "-s", name, "-c"], capture_output=True, text=True,
                               timeout=5, env={**os.environ, "JACK_NO_START_SERVER": "1"})
        return "running" in check.stdout and "not running" not in check.stdout
    # Without jack_wait: the server creates its socket directory entry once it accepts clients.
    return any(name in entry for entry in os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else True


@contextmanager
def jack_server(sample_rate: int = 48000, period: int = 256, timeout: float = _START_TIMEOUT_SECONDS,
                portaudio: bool = True, synchronous: bool = False) -> Iterator[JackServer]:
    """Run `jackd --no-realtime -d dummy` under a unique name for the duration of the block.

    `synchronous` (jackd -S): every cycle waits for every client, so a client late on a loaded machine
    delays the cycle instead of having its events land a period late — what tests of frame-exact
    timing need (jackd2's default asynchronous mode does not wait)."""
    jackd = shutil.which("jackd")
    if jackd is None:
        raise JackUnavailable("jackd is not installed (Debian/Ubuntu: apt-get install jackd2)")
    name = f"smart-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log_file = tempfile.NamedTemporaryFile(prefix="jackd-", suffix=".log", delete=False)
    log_path = Path(log_file.name)
    saved = {key: os.environ.get(key) for key in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    process = subprocess.Popen(
        [jackd, "-n", name, "--no-realtime", *(["-S"] if synchronous else []), "-d", "dummy", "-r", str(sample_rate),
         "-p", str(period)],
        stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log_file.close()
    try:
        deadline = time.monotonic() + timeout
        while not _server_running(name, process):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise JackUnavailable(f"jackd did not start (exit code {process.poll()}): {tail[0]}")
            time.sleep(0.05)
        os.environ["JACK_DEFAULT_SERVER"] = name
        os.environ["JACK_NO_START_SERVER"] = "1"
        sd = _portaudio() if portaudio else None
        if sd is not None:
            _portaudio_terminate(sd)
            sd._initialize()  # now lists the JACK device
        yield JackServer(name, sample_rate, period, process.pid, log_path)
    finally:
        sd = _portaudio() if portaudio else None
        if sd is not None:
            _portaudio_terminate(sd)  # detach from the server while it is still alive
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        try:
            log_path.unlink()
        except OSError:
            pass
        _remove_shm_leftovers(name)
        if sd is not None:
            sd._initialize()  # back to the devices that exist without this server


def _remove_shm_leftovers(name: str) -> None:
    """jackd leaves per-client semaphores of clients that did not close cleanly in /dev/shm."""
    for path in Path("/dev/shm").glob(f"jack*_{name}_*") if Path("/dev/shm").is_dir() else []:
        try:
            path.unlink()
        except OSError:
            pass


def _portaudio():
    """The sounddevice module if PortAudio loads, else None (nothing to re-initialise)."""
    from engine.playback import AudioUnavailable, _sounddevice

    try:
        return _sounddevice()
    except AudioUnavailable:
        return None


def _portaudio_terminate(sd) -> None:
    # Pa_Terminate also closes any stream still open (a test that failed before close()).
    while sd._initialized > 0:
        sd._terminate()


class JackTestDaw:
    """JACK clients playing a DAW for live-MIDI tests and benchmarks: `daw:out` sends a list of
    (frame, bytes) at their exact frames; `daw-monitor:in` — a second client, so that the graph has no
    loop (which JACK would break with a period of delay) — records what arrives, with its frame."""

    def __init__(self):
        import jack

        self.client = jack.Client("daw", no_start_server=True)
        self.monitor = jack.Client("daw-monitor", no_start_server=True)
        self.out = self.client.midi_outports.register("out")
        self.inp = self.monitor.midi_inports.register("in")
        self.rate = self.client.samplerate
        self.to_send: list[tuple[int, bytes]] = []
        self._next = 0
        self.received: list[tuple[int, bytes]] = []
        self.client.set_process_callback(self._send)
        self.monitor.set_process_callback(self._record)
        self.client.activate()
        self.monitor.activate()

    def _send(self, frames: int) -> None:
        f0 = self.client.last_frame_time
        self.out.clear_buffer()
        events = self.to_send
        while self._next < len(events) and events[self._next][0] < f0 + frames:
            frame, data = events[self._next]
            self.out.write_midi_event(max(0, frame - f0), data)
            self._next += 1

    def _record(self, frames: int) -> None:
        f0 = self.monitor.last_frame_time
        for offset, data in self.inp.incoming_midi_events():
            self.received.append((f0 + offset, bytes(data)))

    def play(self, events: list[tuple[int, bytes]]) -> None:
        """Send these (frame, bytes) from now on, in frame order (replaces what was left to send)."""
        self.to_send = []
        self._next = 0
        self.to_send = sorted(events, key=lambda e: e[0])

    def close(self) -> None:
        for c in (self.client, self.monitor):
            c.deactivate()
            c.close()
