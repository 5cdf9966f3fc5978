"""What the host reads from and writes to the wire, for every route: a client's base64 MIDI file decoded
once (generation, scoring, training jobs), and values made strict JSON (NaN/inf as null)."""

from __future__ import annotations

import base64
import binascii
import logging
import math
from typing import Any

from engine.errors import UserError, first_line
from engine.music import Clip, MidiFileError

log = logging.getLogger("smart.host")

MAX_REPORTED_DEPTH = 64  # values nested deeper are reported as null (the encoder recurses too)


def b64decode(value: Any, what: str) -> bytes:
    """The bytes of a base64 field of a request; UserError naming `what` otherwise."""
    if not isinstance(value, str):
        raise UserError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise UserError(f"{what} is not valid base64") from None


def decode_midi(value: Any, what: str, *, max_bytes: int | None = None,
                notes: list[str] | None = None) -> tuple[bytes, Clip]:
    """(bytes, Clip) of a client's base64 MIDI file; UserError naming `what` otherwise. Call it in a worker
    thread: parsing is heavy, never work for the event loop. What the import ignored (meters a bar of which is
    shorter than a tick, events past the last bar) is appended to `notes`, for the musician."""
    if not isinstance(value, str):
        raise UserError(f"{what} must be a base64 MIDI file")
    if max_bytes is not None and len(value) > max_bytes * 4 // 3 + 4:
        raise UserError(f"{what} is larger than {max_bytes // 1024} KiB")
    data = b64decode(value, what)
    try:
        clip, report = Clip.from_midi(data, mode="user")
    except MidiFileError as exc:
        raise UserError(f"{what}: {exc}") from None
    except (ValueError, OverflowError, MemoryError, RecursionError) as exc:  # hostile values the parser rejects late
        log.warning("%s could not be read: %r", what, exc)
        raise UserError(f"{what} cannot be read: {first_line(exc)}") from None
    if notes is not None:
        notes.extend(m for m in report.messages if m.startswith("ignored "))
    return data, clip


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` with every NaN/inf as null (they are not JSON: strict encoders refuse them, and a stream must
    stay parseable); tuples as lists. Values nested deeper than MAX_REPORTED_DEPTH are reported as null."""
    if depth > MAX_REPORTED_DEPTH:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return value
