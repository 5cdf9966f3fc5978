"""A jam `Generator` that asks the policy host over HTTP: the studio never loads torch.

`host_generator(get_client, get_settings)` returns `generate(clip, at_tick, bars) -> list[Note]` for
`engine.live.jam.Jam`, which calls it on its own worker thread (never the UI thread). Each call is one
streamed /v1/generate request for one candidate, unscored, with a token budget per bar so a run-away
sample cannot make the answer late. No Qt here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from engine.host_client import HostClient, HostError, decode_midi
from engine.live.cli import TOKENS_PER_BAR
from engine.music import Clip, Note


@dataclass(frozen=True)
class JamSampling:
    temperature: float = 1.0
    top_p: float = 0.95
    seed: int | None = None
    allowed_pitches: tuple[int, ...] | None = None  # a key lock / pitch range (None: every pitch)
    candidates: int = 1  # best of N: the host samples N answers and `choose` picks one


class JamHostError(RuntimeError):
    """The host could not answer (not connected, refused, broke the stream)."""


def host_generator(get_client: Callable[[], HostClient | None], get_sampling: Callable[[], JamSampling],
                   stopped: threading.Event | None = None,
                   on_error: Callable[[str], None] | None = None,
                   choose: Callable[[list[Clip], Clip], int] | None = None) -> Callable[[Clip, int, int], list[Note]]:
    """`get_client()` is read at every call (the studio may reconnect between answers); `get_sampling()` too,
    so temperature, top-p, the key lock and best-of-N changed while jamming apply to the next answer. With
    N > 1 candidates, `choose(answers, prompt)` picks one (the musician's taste); without it the first.
    A failure answers nothing (the jam goes on listening) and is reported through `on_error`; once
    `stopped` is set an answer that arrives is dropped."""

    current: list = []  # the stream being read, for cancel()

    def generate(clip: Clip, at_tick: int, bars: int) -> list[Note]:
        client = get_client()
        try:
            if client is None:
                raise JamHostError("the generation host is not connected")
            s = get_sampling()
            stream = client.generate(prompt_midi=clip.to_midi_bytes(), candidates=s.candidates, bars=bars,
                                     at_tick=at_tick, temperature=s.temperature, top_p=s.top_p, seed=s.seed,
                                     score=False, max_new_tokens=min(4096, TOKENS_PER_BAR * bars),
                                     allowed_pitches=s.allowed_pitches)
            current.append(stream)
            try:
                with stream:
                    result = stream.wait()
            finally:
                current.remove(stream)
            candidates = result.get("candidates") or []
            answers = [decode_midi(c["midi"]) for c in candidates]
            best = 0
            if choose is not None and len(answers) > 1:
                best = choose([a.with_notes([n for n in a.notes if n.start >= at_tick]) for a in answers],
                              clip)
            notes = answers[best].notes if answers else []
        except (HostError, JamHostError, KeyError, ValueError) as exc:
            if on_error is not None and not (stopped is not None and stopped.is_set()):
                on_error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return []
        if stopped is not None and stopped.is_set():
            return []
        return notes

    def cancel() -> None:
        """Close the request in flight (the host stops decoding it; the jam thread returns at once)."""
        for stream in list(current):
            try:
                stream.close()
            except Exception:
                pass

    generate.cancel = cancel
    return generate
