"""The generation history of a project, typed (no Qt): each request with its settings, model and
outcome, and each candidate it produced.

The project file keeps them as plain dicts (`Project.history`, `Project.candidates`, unchanged on disk);
`GenerationHistory` owns the typed view of those lists and writes every change through to them, so
saving the project saves the latest state.
"""

from __future__ import annotations

import datetime
import itertools
import math
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from engine.music import Note
from studio.generate.search import reward_name

MAX_PROJECT_CANDIDATES = 400
MAX_PROJECT_HISTORY = 500
CONTINUE, INFILL, SEARCH = "continue", "infill", "search"
# Candidate states: still streaming, ready to audition/accept, or decided.
STREAMING, READY, ACCEPTED, DISCARDED = "streaming", "ready", "accepted", "discarded"
_uids = itertools.count(1)


@dataclass(eq=False)  # identity: two candidates with the same notes are still two candidates
class Candidate:
    index: int  # position in its request (and its colour)
    request: str  # id of the request that made it
    mode: str  # CONTINUE, INFILL or SEARCH
    notes: list[Note] = field(default_factory=list)
    features: dict | None = None
    scores: dict | None = None
    random_weights: bool = False
    scores_error: str | None = None
    finished_by: str | None = None
    status: str = STREAMING
    span: tuple[int, int] | None = None  # the ticks it was written for: [continuation point, end) or the infill
    placement: str | None = None  # continue: how it goes into the sketch (studio.generate.placement)
    reward: float | None = None  # search: the reward it was kept for
    uid: int = field(default_factory=lambda: next(_uids))

    @property
    def label(self) -> str:
        return f"{'S' if self.mode == SEARCH else '#'}{self.index + 1}"

    def to_dict(self) -> dict:
        return {"request": self.request, "index": self.index, "mode": self.mode,
                "notes": [[n.start, n.pitch, n.duration, n.velocity] for n in self.notes],
                "features": self.features, "scores": self.scores, "random_weights": self.random_weights,
                "scores_error": self.scores_error, "finished_by": self.finished_by, "status": self.status,
                "span": list(self.span) if self.span else None, "placement": self.placement, "reward": self.reward}

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        span = d.get("span")
        return cls(index=int(d.get("index", 0)), request=str(d.get("request", "")), mode=str(d.get("mode", CONTINUE)),
                   notes=[Note(int(s), int(p), int(du), int(v)) for s, p, du, v in d.get("notes", [])],
                   features=d.get("features"), scores=d.get("scores"),
                   random_weights=bool(d.get("random_weights", False)), scores_error=d.get("scores_error"),
                   finished_by=d.get("finished_by"), status=str(d.get("status", READY)),
                   span=(int(span[0]), int(span[1])) if span else None, placement=d.get("placement"),
                   reward=d.get("reward"))


@dataclass(eq=False)
class Request:
    """One press of Continue / Regenerate / Search, as kept in the project."""

    id: str
    time: str
    mode: str
    settings: dict
    allowed_pitches: list[int] | None = None
    model: dict = field(default_factory=dict)
    host: dict = field(default_factory=dict)
    maa: str = "unknown"
    status: str = "running"  # running, completed, failed, cancelled
    candidates: int = 0  # how many are complete
    scores: list = field(default_factory=list)
    accepted: int | None = None
    at_tick: int | None = None
    span_bars: list[int] | None = None
    span_ticks: list[int] | None = None
    placement: str | None = None
    elapsed_s: float | None = None
    error: str | None = None
    meter_note: str | None = None  # the host read the prompt with other bar lines (engine.meter)
    # search
    reward: str | None = None
    beams: int | None = None
    budget_s: float | None = None
    steps: int | None = None
    stopped_by: str | None = None
    requests: int | None = None
    rewards: list | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys written by other versions, kept as they were

    @classmethod
    def new(cls, mode: str, settings: dict, **values) -> "Request":
        return cls(id=uuid.uuid4().hex[:12], time=datetime.datetime.now().isoformat(timespec="seconds"), mode=mode,
                   settings=settings, **values)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        if self.mode != SEARCH:
            for key in ("reward", "beams", "budget_s", "steps", "stopped_by", "requests", "rewards"):
                del out[key]
        for key in ("error", "placement", "elapsed_s", "meter_note"):
            if out[key] is None:
                del out[key]
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, d: dict) -> "Request":
        names = {f.name for f in fields(cls)} - {"extra"}
        # A field of the wrong shape (a damaged or hand-edited file) is read as absent; the project's
        # dict keeps it as it was until this request is changed.
        known = {k: v for k, v in d.items() if k in names and _REQUEST_FIELD_OK.get(k, _any)(v)}
        known.setdefault("id", "")
        known.setdefault("time", "")
        known.setdefault("mode", "?")
        known["settings"] = _settings(known.get("settings") or {})
        # Search rewards renamed since (studio.generate.search.OLD_REWARD_NAMES) are read by today's name.
        if isinstance(known.get("reward"), str):
            known["reward"] = reward_name(known["reward"])
        if isinstance(known["settings"].get("search_reward"), str):
            known["settings"]["search_reward"] = reward_name(known["settings"]["search_reward"])
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})


def _any(value: Any) -> bool:
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**62


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return abs(value) < 10**15  # an int too large for a float is no number of ours either
    return math.isfinite(value) and abs(value) < 1e15


def _optional(check):
    return lambda value: value is None or check(value)


def _ints(n: int | None = None):
    return lambda value: (isinstance(value, list) and (n is None or len(value) == n)
                          and all(_is_int(v) for v in value))


def _scores(value: Any) -> bool:
    """[{axis: number | null, ...} | null, ...]: what a request's candidates scored."""
    return isinstance(value, list) and all(
        s is None or (isinstance(s, dict) and all(v is None or _is_number(v) for v in s.values())) for s in value)


_str = _optional(lambda v: isinstance(v, str))
_REQUEST_FIELD_OK = {
    "id": lambda v: isinstance(v, str), "time": lambda v: isinstance(v, str), "mode": lambda v: isinstance(v, str),
    "settings": lambda v: isinstance(v, dict), "allowed_pitches": _optional(_ints()),
    "model": lambda v: isinstance(v, dict) and _str(v.get("path")), "host": lambda v: isinstance(v, dict),
    "maa": lambda v: isinstance(v, str), "status": lambda v: isinstance(v, str),
    "candidates": lambda v: _is_int(v) and v >= 0, "scores": _scores, "accepted": _optional(lambda v: _is_int(v) and v >= 0),
    "at_tick": _optional(lambda v: _is_int(v) and v >= 0), "span_bars": _optional(_ints(2)),
    "span_ticks": _optional(_ints(2)), "placement": _str, "elapsed_s": _optional(_is_number), "error": _str,
    "meter_note": _str, "reward": _str, "beams": _optional(_is_int), "budget_s": _optional(_is_number),
    "steps": _optional(_is_int), "stopped_by": _str, "requests": _optional(_is_int),
    "rewards": _optional(lambda v: isinstance(v, list) and all(x is None or _is_number(x) for x in v)),
}


def _settings(settings: dict) -> dict:
    """A request's generation settings, each of the type of its `GenerateOptions` field (others dropped:
    a damaged value must not stop the history from showing)."""
    from studio.generate.options import GenerateOptions

    defaults = {f.name: f.default for f in fields(GenerateOptions)}
    out = {}
    for key, value in settings.items():
        default = defaults.get(key)
        if key not in defaults:
            out[key] = value  # a setting of another version: kept
        elif isinstance(default, bool):
            if isinstance(value, bool):
                out[key] = value
        elif isinstance(default, int):
            if _is_int(value):
                out[key] = value
        elif isinstance(default, float):
            if _is_number(value):
                out[key] = value
        elif isinstance(value, type(default)):
            out[key] = value
    return out


class GenerationHistory:
    """The typed requests and candidates of one project, written through to its lists of dicts."""

    def __init__(self, project) -> None:
        self.project = project
        self._request_dicts: dict[str, dict] = {}
        self._candidate_dicts: dict[int, dict] = {}  # Candidate.uid -> its dict in project.candidates
        self.requests: list[Request] = []
        for d in project.history:
            if isinstance(d, dict):
                try:
                    req = Request.from_dict(d)
                except (TypeError, ValueError, KeyError, AttributeError):  # unreadable: skipped, left in the file
                    continue
                self.requests.append(req)
                self._request_dicts[req.id] = d

    # ------------------------------------------------------------------ requests
    def add(self, request: Request) -> Request:
        d = request.to_dict()
        history = self.project.history
        history.append(d)
        dropped = history[:-MAX_PROJECT_HISTORY]
        del history[:-MAX_PROJECT_HISTORY]
        for old in dropped:
            if isinstance(old, dict):
                self._request_dicts.pop(old.get("id"), None)
        self.requests = [r for r in self.requests if r.id in self._request_dicts] + [request]
        self._request_dicts[request.id] = d
        return request

    def save(self, request: Request) -> None:
        """Write the request's current state into the project."""
        d = self._request_dicts.get(request.id)
        if d is not None:
            d.clear()
            d.update(request.to_dict())

    def find(self, request_id: str) -> Request | None:
        return next((r for r in reversed(self.requests) if r.id == request_id), None)

    @property
    def latest(self) -> Request | None:
        return self.requests[-1] if self.requests else None

    # ------------------------------------------------------------------ candidates
    def store(self, candidate: Candidate) -> None:
        """Keep the candidate (or its new state) with the project; the file stays bounded."""
        cands = self.project.candidates
        d = self._candidate_dicts.get(candidate.uid)
        if d is not None and any(e is d for e in cands):
            d.clear()
            d.update(candidate.to_dict())
            return
        d = candidate.to_dict()
        self._candidate_dicts[candidate.uid] = d
        cands.append(d)
        while len(cands) > MAX_PROJECT_CANDIDATES:  # the oldest not-accepted entries go first
            victim = next((e for e in cands if not isinstance(e, dict) or e.get("status") != ACCEPTED), cands[0])
            cands.remove(victim)

    def open_candidates(self, request_id: str) -> list[Candidate]:
        """The request's candidates nobody accepted or discarded yet (readable entries only)."""
        out = []
        for d in self.project.candidates:
            if not isinstance(d, dict) or d.get("request") != request_id or d.get("status") not in (READY, STREAMING):
                continue
            try:
                cand = Candidate.from_dict(d)
            except (TypeError, ValueError, KeyError):
                continue
            cand.status = READY
            self._candidate_dicts[cand.uid] = d
            out.append(cand)
        return out
