"""The meter the model reads: which time signatures its vocabulary holds, and any clip's bar lines as
the model reads them (`model_meter`), with a note in a musician's words of what changed.

Light on purpose (engine.music only, no MidiTok/torch): the tokenizer encodes in this meter, the host
re-bars prompts with it, and the torch-free studio re-bars imported files and counts the bars it sends
to the host with the same rule.

A clip is re-barred once where it crosses into code that counts the model's bars (the studio building a
request, the host reading one, the policy's continue and infill); what comes out is a `ModelClip`, and
code given one trusts its bars (`model_meter` hands it back as it is).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Collection, NamedTuple

from engine.music import Clip, TimeSignature

# The SMART code's time signatures, as MidiTok's `time_signature_range` (denominator: numerators):
# 2/4…6/4, 3/8…12/8, 2/2, 3/2.
TIME_SIGNATURE_RANGE = {4: [2, 3, 4, 5, 6], 8: [3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 2: [2, 3]}
MODEL_TIME_SIGNATURES = tuple((num, den) for den, nums in TIME_SIGNATURE_RANGE.items() for num in nums)

_NOTE_VALUES = {1: "whole notes", 2: "half notes", 4: "beats", 8: "eighths", 16: "sixteenths", 32: "32nds"}


def meter_words(ts: TimeSignature) -> str:
    """E.g. "4/4 (bars of 4 beats)"."""
    unit = _NOTE_VALUES.get(ts.denominator, f"1/{ts.denominator} notes")
    return f"{ts.numerator}/{ts.denominator} (bars of {ts.numerator} {unit})"


def _meter_note(ppq: int, dropped: list[TimeSignature], moved: list[tuple[TimeSignature, int]],
                after: list[TimeSignature]) -> str | None:
    """What `model_meter` changed, in a musician's words (bar numbers count from 1)."""
    bar_at = Clip([], ppq, [], list(after)).bar_index_at  # bars of the new meter
    parts: list[str] = []
    for ts in dropped:
        now = next(a for a in reversed(after) if a.tick <= ts.tick)
        where = f" from bar {bar_at(ts.tick) + 1}" if ts.tick > 0 else ""
        parts.append(f"{ts.numerator}/{ts.denominator}{where} read as {meter_words(now)}")
    for ts, tick in moved:
        parts.append(f"{ts.numerator}/{ts.denominator} moved to the next bar line (bar {bar_at(tick) + 1})")
    parts = list(dict.fromkeys(parts))
    if len(parts) > 3:  # a long list of changes: the first ones and a count
        parts = parts[:3] + [f"{len(parts) - 3} more meter changes"]
    return "; ".join(parts) or None


class ModelClip(NamedTuple):
    """A clip with the bar lines the model reads (`model_meter`'s result), and what re-barring it changed in a
    musician's words (None: nothing)."""

    clip: Clip
    note: str | None = None


def model_meter(clip: Clip | ModelClip,
                supported: Collection[tuple[int, int]] = MODEL_TIME_SIGNATURES) -> ModelClip:
    """The clip with the bar lines the model reads, and a note for the musician (None: unchanged).

    MidiTok (through which the training data was tokenized) drops time signatures outside the
    vocabulary (`supported`) — the meter before one goes on, 4/4 at the start — and moves a change
    that falls inside a bar to the next bar line of the meter before it. This applies the same rule
    to the clip itself, so every bar line of the tokens is a bar line of the clip: encoding, prompts,
    "the last N bars" and the bars of an infill all count the same bars. Notes and tempi keep their
    ticks; only bar lines change. The clip itself is returned when nothing changes, and a `ModelClip`
    whose meters are all `supported` as it is (its meters already sit on bar lines: re-barring it would
    change nothing). E.g. POP909's 1/4 files: "1/4 read as 4/4 (bars of 4 beats)".
    """
    supported = set(supported)
    if isinstance(clip, ModelClip):
        if all((ts.numerator, ts.denominator) in supported for ts in clip.clip.time_signatures):
            return clip
        clip = clip.clip  # re-barred for another vocabulary
    sigs = clip.time_signatures
    kept = [ts for ts in sigs if (ts.numerator, ts.denominator) in supported]
    dropped = [ts for ts in sigs if (ts.numerator, ts.denominator) not in supported]
    if not kept or kept[0].tick != 0:
        kept.insert(0, TimeSignature(0, 4, 4))
    out = [kept[0]]
    moved: list[tuple[TimeSignature, int]] = []
    for ts in kept[1:]:  # MidiTok's `_preprocess_time_signatures`
        prev = out[-1]
        if (ts.numerator, ts.denominator) == (prev.numerator, prev.denominator):
            continue
        bar = prev.ticks_per_bar(clip.ppq)
        whole, rest = divmod(max(ts.tick, prev.tick) - prev.tick, bar)
        tick = prev.tick + (whole + (1 if rest else 0)) * bar
        if tick != ts.tick:
            moved.append((ts, tick))
        if tick == prev.tick:  # two at one tick: the later one wins
            out[-1] = replace(ts, tick=tick)
            if len(out) > 1 and (out[-2].numerator, out[-2].denominator) == (ts.numerator, ts.denominator):
                out.pop()
        else:
            out.append(replace(ts, tick=tick))
    if out == sigs:
        return ModelClip(clip, None)
    return ModelClip(Clip(list(clip.notes), clip.ppq, list(clip.tempos), out),
                     _meter_note(clip.ppq, dropped, moved, out))
