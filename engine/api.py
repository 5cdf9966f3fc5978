"""The host's API contract, light enough for every process (pydantic, no torch): limits, names and
defaults shared by the policy host (`engine.host`), its client (`engine.host_client`), the studio and
training.

- generation: `GenerationSettings` and its one validator (`validate(limits)`), the request models of
  /v1/generate, /v1/score and /v1/models/activate, and the replies and events a client reads back
  (`HealthReply`, `ScoreReply`, the /v1/generate events) with the MAA status (`MaaStatus`)
- training: the GRPO run options (`GRPOOptions`: types, bounds, defaults = the paper's), `PRESETS`,
  the reward catalogue (`REWARDS`) and the spec grammar (`parse_reward_spec`); `training.grpo`'s
  `GRPORunConfig` extends `GRPOOptions`, and the host checks /v1/train bodies with
  `validate_grpo_options` and serves the catalogue at GET /v1/train/options (`train_options`)
- the files a training job shares with the host (run directory layout, job files); the replies and events
  of its /v1/jobs routes are `engine.job_api`'s
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from engine import maa_weights
from engine.errors import UserError

# MAA (owned by engine.maa_weights, re-exported as part of the contract).
MAA_AXES = maa_weights.AXES
MAA_WINDOW_SECONDS = maa_weights.WINDOW_SECONDS
MAA_REPO_ID = maa_weights.HF_REPO_ID
MAA_DOWNLOAD_BYTES = maa_weights.MAA_DOWNLOAD_BYTES


# ============================================================================ transport
TOKEN_ENV_VAR = "SMART_HOST_TOKEN"
DEFAULT_PORT = 8765
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
# Host names a loopback host answers to (DNS rebinding: a page on evil.example resolving to 127.0.0.1
# sends `Host: evil.example`); loopback IP literals (127.x, ::1) are accepted as well.
LOOPBACK_HOST_NAMES = frozenset({"localhost", "localhost.", "localhost.localdomain"})
JSON_CONTENT_TYPE = "application/json"
# /docs and the schema it loads stay reachable without the token (a browser cannot send a bearer
# header to fetch them); they describe the API, not any data. Everything else needs the token.
AUTH_EXEMPT_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})

# ============================================================================ generation limits
MAX_CANDIDATES = 16
MAX_BARS = 64
MAX_NEW_TOKENS = 4096
MAX_INFILL_START_BAR = 2048
MAX_SEED = 2**63 - 1
MAX_TEMPERATURE = 5.0
# Token families a temperature factor may name (the REMI kinds of engine.tokenizer; specials excluded).
TOKEN_FAMILIES = ("Bar", "TimeSig", "Position", "Tempo", "Pitch", "Velocity", "Duration")
MAX_TEMPERATURE_FACTOR = 5.0
# The shipped per-family factors, chosen for the shipped model on the validation split by a rule stated in
# advance (BENCHMARKS.md, "Sampling defaults: the rule"). Re-chosen for the step-3,838 model (32 passages ×
# 4): surer pitches keep the key; this model again writes slightly too many short notes (median 0.375 beats
# against the data's 0.5), and Duration ×1.2 brings its onsets and note lengths to the data's (onsets 0.99×
# the truth, median 0.5 beats), where ×1.6 overshoots.
DEFAULT_TEMPERATURE_FACTORS: Mapping[str, float] = {"Pitch": 0.8, "Duration": 1.2, "Velocity": 1.2}
# Audio scored per clip is cropped here: MAA averages 10-s windows, and a hostile MIDI file with a
# note at tick 10^9 must not make the host render hours of audio.
MAX_SCORE_SECONDS = 120.0
SCORE_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class GenerationLimits:
    """Upper bounds of one generation request (the lower bounds are fixed: 1 candidate, 1 bar, 1 token)."""

    candidates: int
    bars: int
    max_new_tokens: int


# In-process generation (CLI, training tools): bounded by memory only.
LOCAL_LIMITS = GenerationLimits(candidates=64, bars=256, max_new_tokens=65536)
# A shared host: one request must not take the whole batch or hours of decoding.
HOST_LIMITS = GenerationLimits(candidates=MAX_CANDIDATES, bars=MAX_BARS, max_new_tokens=MAX_NEW_TOKENS)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy ints too


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class GenerationSettings:
    """How to sample: the one set of generation settings, checked by `validate` wherever they enter
    (the policy, the host's /v1/generate, `smart generate`, the studio's options).

    temperature 0 means greedy decoding (the most likely token every step); top_p < 1 samples from
    the smallest set of most likely tokens whose probability reaches top_p. temperature_factors
    ({family: factor}, families of TOKEN_FAMILIES) sample that family's tokens at temperature × factor
    among themselves, the family keeping the probability it has at `temperature` (e.g. {"Pitch": 0.8}:
    surer pitches, unchanged rhythm and dynamics); ignored when greedy."""

    candidates: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    seed: int | None = None
    bars: int | None = 4  # stop each candidate after this many new bars…
    max_new_tokens: int = 1024  # …or this many tokens, whichever first
    grammar: bool = True  # mask tokens that cannot legally come next
    allowed_pitches: Sequence[int] | None = None  # key/scale lock and pitch range (logit mask)
    temperature_factors: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TEMPERATURE_FACTORS))

    def validate(self, limits: GenerationLimits = LOCAL_LIMITS) -> None:
        """ValueError naming the first setting out of range (types included: no bools for numbers)."""
        if not _is_int(self.candidates) or not 1 <= self.candidates <= limits.candidates:
            raise ValueError(f"candidates must be between 1 and {limits.candidates}")
        if not _is_number(self.temperature) or not 0.0 <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise ValueError("seed must be an integer between 0 and 2^63-1")
        if self.bars is not None and (not _is_int(self.bars) or not 1 <= self.bars <= limits.bars):
            raise ValueError(f"bars must be between 1 and {limits.bars}")
        if not _is_int(self.max_new_tokens) or not 1 <= self.max_new_tokens <= limits.max_new_tokens:
            raise ValueError(f"max_new_tokens must be between 1 and {limits.max_new_tokens}")
        if self.allowed_pitches is not None:
            pitches = list(self.allowed_pitches)
            if not 1 <= len(pitches) <= 128 or not all(_is_int(p) and 0 <= p <= 127 for p in pitches):
                raise ValueError("allowed_pitches must be 1 to 128 MIDI pitches 0..127")
            if not self.grammar:
                raise ValueError("a pitch/key lock needs grammar-aware sampling (grammar=True)")
        if not isinstance(self.temperature_factors, Mapping):
            raise ValueError("temperature_factors must map token families to factors")
        for family, factor in self.temperature_factors.items():
            if family not in TOKEN_FAMILIES:
                raise ValueError(f"temperature_factors: unknown token family {family!r} "
                                 f"(choose from {', '.join(TOKEN_FAMILIES)})")
            if not _is_number(factor) or not 0.0 < factor <= MAX_TEMPERATURE_FACTOR:
                raise ValueError(f"temperature_factors[{family!r}] must be in (0, {MAX_TEMPERATURE_FACTOR:g}]")


def parse_temperature_factors(text: str) -> dict[str, float]:
    """"Pitch=0.8,Velocity=1.1" → {"Pitch": 0.8, "Velocity": 1.1}; "" or "none" → {} (no factors).
    A malformed pair raises ValueError naming it (command lines take it through `engine.cliutil.option_type`, as
    a usage error); families and factors are checked by `GenerationSettings.validate`."""
    out: dict[str, float] = {}
    if text.strip().lower() in ("", "none"):
        return out
    for part in text.split(","):
        family, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[family.strip()] = float(value)
        except ValueError:
            raise ValueError(f"expected FAMILY=FACTOR[,...], got {part!r}") from None
    return out


# ============================================================================ request models
class _Strict(BaseModel):
    """A request body: unknown fields refused, and no coercion — "4", true or 4.0 are not the integer 4,
    "yes" or 1 not a bool, a string not a number (a float field takes integers, as JSON writes 1.0 as 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class InfillSpan(_Strict):
    start_bar: int = Field(ge=0, le=MAX_INFILL_START_BAR, description="first bar to rewrite (0-based)")
    end_bar: int = Field(ge=1, le=MAX_INFILL_START_BAR + MAX_BARS, description="bar after the last one")

    @model_validator(mode="after")
    def _span(self):
        if self.end_bar <= self.start_bar:
            raise ValueError("infill.end_bar must be greater than infill.start_bar")
        if self.end_bar - self.start_bar > MAX_BARS:
            raise ValueError(f"an infill spans at most {MAX_BARS} bars")
        return self


class GenerateRequest(_Strict):
    """POST /v1/generate. The sampling fields are checked by `GenerationSettings.validate(HOST_LIMITS)`."""

    prompt_midi: str | None = Field(None, max_length=DEFAULT_MAX_BODY_BYTES,
                                    description="base64 Standard MIDI File; omitted → procedural prompt")
    candidates: int = Field(GenerationSettings.candidates, description=f"1..{MAX_CANDIDATES}")
    bars: int = Field(GenerationSettings.bars, description=f"new bars per candidate (infill: the span), 1..{MAX_BARS}")
    temperature: float = Field(GenerationSettings.temperature, description=f"0 (greedy) .. {MAX_TEMPERATURE:g}")
    top_p: float = Field(GenerationSettings.top_p, description="(0, 1]")
    temperature_factors: dict[str, float] | None = Field(
        None, description=f"per token family ({', '.join(TOKEN_FAMILIES)}): temperature × factor within the "
                          f"family, factor in (0, {MAX_TEMPERATURE_FACTOR:g}]; omitted → the shipped default, "
                          "{} → none")
    seed: int | None = Field(None, description="0..2^63-1; omitted → random")
    max_new_tokens: int = Field(GenerationSettings.max_new_tokens, description=f"1..{MAX_NEW_TOKENS}")
    at_tick: int | None = Field(None, ge=0, le=2**40, description="continue from here (default: the end)")
    infill: InfillSpan | None = None
    allowed_pitches: list[int] | None = Field(None, description="key lock / range: pitches the model may write")
    score: bool = True
    first_note: bool = Field(False, description="procedural prompts also get a first note")

    def body(self) -> dict:
        """The JSON body: the fields the sender set (a field left out takes the host's default)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def settings(self) -> GenerationSettings:
        factors = {} if self.temperature_factors is None else {"temperature_factors": self.temperature_factors}
        return GenerationSettings(candidates=self.candidates, temperature=self.temperature, top_p=self.top_p,
                                  seed=self.seed, bars=self.bars, max_new_tokens=self.max_new_tokens,
                                  grammar=True, allowed_pitches=self.allowed_pitches, **factors)

    @model_validator(mode="after")
    def _check(self):
        self.settings().validate(HOST_LIMITS)
        if self.infill is not None and self.prompt_midi is None:
            raise ValueError("infill needs prompt_midi (the clip to rewrite bars of)")
        if self.infill is not None and self.at_tick is not None:
            raise ValueError("give either at_tick or infill, not both")
        return self


class ScoreRequest(_Strict):
    midi: str | None = Field(None, description="base64 Standard MIDI File (rendered through the SoundFont)")
    wav: str | None = Field(None, description="base64 audio file (WAV/FLAC/OGG)")

    @model_validator(mode="after")
    def _one(self):
        if (self.midi is None) == (self.wav is None):
            raise ValueError("give exactly one of midi or wav")
        return self


class ActivateRequest(_Strict):
    path: str = Field(min_length=1, max_length=4096, pattern=r"^[^\x00]*$",
                      description="a SMART model directory (safetensors)")


# ============================================================================ replies and events
class MaaStatus(StrEnum):
    """The host's MAA scorer: real weights, random weights (plumbing and timing only, never real ratings),
    or none (candidates are not scored; MAA rewards are refused)."""

    AVAILABLE = "available"
    RANDOM_WEIGHTS = "random-weights"
    MISSING = "missing"

    @property
    def scores(self) -> bool:
        """Candidates get scores (real ones, or random-weight ones for tests)."""
        return self is not MaaStatus.MISSING


class Reply(BaseModel):
    """A host reply or event as a client reads it: typed fields, and the fields a newer host adds kept as
    they came (extra). Read-only mapping access by wire name (`reply["maa"]`, `reply.get("x")`) is kept for
    callers that treat replies as the JSON they are."""

    model_config = ConfigDict(extra="allow")

    def __getitem__(self, name: str):
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def get(self, name: str, default=None):
        return getattr(self, name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.model_fields_set or name in (self.model_extra or {})


class MaaInfo(Reply):
    status: MaaStatus = MaaStatus.MISSING
    reason: str | None = None  # why it is missing or random
    source: str | None = None  # the checkpoint the host scores with


class ModelInfo(Reply):
    path: str | None = None
    parameters: int | None = None
    layers: int | None = None
    hidden_size: int | None = None
    heads: int | None = None
    context_length: int | None = None
    vocab_size: int | None = None
    device: str | None = None


class HostLimitsInfo(Reply):
    candidates: int = MAX_CANDIDATES
    bars: int = MAX_BARS
    max_new_tokens: int = MAX_NEW_TOKENS
    body_bytes: int = DEFAULT_MAX_BODY_BYTES
    active_requests: int | None = None


class HealthReply(Reply):
    """GET /v1/health."""

    status: str = "ok"
    device: str = "?"
    decode_weights: str | None = None  # "model" (exact), "int8" or "fp16"
    model: ModelInfo = Field(default_factory=ModelInfo)
    maa: MaaInfo = Field(default_factory=MaaInfo)
    auth: bool = False
    uptime_s: float | None = None
    limits: HostLimitsInfo = Field(default_factory=HostLimitsInfo)
    stats: dict = Field(default_factory=dict)
    decode: dict = Field(default_factory=dict)


class ScoreReply(Reply):
    """POST /v1/score: MAA's four axes on the 1–10 scale."""

    CE: float
    CU: float
    PC: float
    PQ: float
    random_weights: bool = False
    maa: str | None = None
    seconds: float | None = None

    def axes(self) -> dict[str, float]:
        return {axis: float(getattr(self, axis)) for axis in MAA_AXES}


class GenerationStarted(Reply):
    event: Literal["started"] = "started"
    request_id: int | None = None
    candidates: int | None = None
    ppq: int | None = None
    meter_note: str | None = None  # the host read the prompt with other bar lines than the file's


class StreamedNote(Reply):
    start: int
    pitch: int
    duration: int
    velocity: int = 80


class GenerationNote(Reply):
    event: Literal["note"] = "note"
    candidate: int
    note: StreamedNote


class GenerationCandidate(Reply):
    """A complete candidate: its MIDI (base64, `engine.host_client.decode_midi`), features and scores."""

    event: Literal["candidate"] | None = None  # absent in the done event's list
    candidate: int
    midi: str
    notes: int | None = None
    bars: int | None = None
    tokens: int | None = None
    finished_by: str | None = None
    end_tick: int | None = None
    features: dict | None = None
    scores: dict | None = None
    random_weights: bool | None = None
    scores_error: str | None = None


class GenerationDone(Reply):
    event: Literal["done"] = "done"
    done: bool = True
    request_id: int | None = None
    ppq: int | None = None
    candidates: list[GenerationCandidate] = Field(default_factory=list)
    model: ModelInfo = Field(default_factory=ModelInfo)
    elapsed_s: float | None = None


class GenerationError(Reply):
    event: Literal["error"] = "error"
    request_id: int | None = None
    message: str = ""


GENERATION_EVENTS = {"started": GenerationStarted, "note": GenerationNote, "candidate": GenerationCandidate,
                     "done": GenerationDone, "error": GenerationError}


def generation_event(data: dict) -> Reply:
    """One /v1/generate NDJSON line as its event model (an unknown kind stays a plain `Reply`)."""
    return GENERATION_EVENTS.get(data.get("event"), Reply).model_validate(data)


# ============================================================================ training: run directory
STOP_FILE = "STOP"  # a run stops after the current step when OUT/STOP exists
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_MARKER = "smart_checkpoint.json"  # written last: the checkpoint is complete
RUN_CONFIG_FILE = "run_config.json"
EVENTS_FILE = "events.jsonl"
PHASE_FILE = "phase.json"  # {"phase": text, "since": unix time}: what a job does before/between its steps
FINAL_DIR = "final"
PREPARED_DATA_MARKER = "manifest.json"  # `smart prepare-data` output (data:DIR prompts)


def complete_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, dir) of every checkpoint whose marker was written (i.e. finished saving), by step."""
    root = Path(out_dir) / CHECKPOINT_DIR
    found = []
    if root.is_dir():
        for d in root.glob("checkpoint-*"):
            marker = d / CHECKPOINT_MARKER
            try:
                step = int(d.name.rsplit("-", 1)[1])
                info = json.loads(marker.read_text())
            except (ValueError, IndexError, OSError, RecursionError):  # JSONDecodeError is a ValueError
                continue
            if isinstance(info, dict) and info.get("step") == step:
                found.append((step, d))
    return sorted(found)


# ============================================================================ training: host jobs
# A host job is a process `python -m engine.cli JOB_PROCESS_COMMAND JOBDIR [--resume] [--parent-pid N]`;
# the command is registered by `training` (hidden from --help). It reads JOBDIR/JOB_FILE's "config"
# and leaves RESULT_FILE (success) or ERROR_FILE ({"error": "Type: message"}) behind.
JOB_PROCESS_COMMAND = "host-job"
JOB_FILE = "job.json"
RESULT_FILE = "job_result.json"
ERROR_FILE = "job_error.json"

# ============================================================================ training: rewards
@dataclass(frozen=True)
class RewardInfo:
    name: str
    description: str
    needs_maa: bool


REWARDS: tuple[RewardInfo, ...] = (
    RewardInfo("maa-ce", f"MAA content enjoyment (CE) of the first {MAA_WINDOW_SECONDS} s — the paper's reward", True),
    RewardInfo("maa-cu", f"MAA content usefulness (CU) of the first {MAA_WINDOW_SECONDS} s", True),
    RewardInfo("maa-pc", f"MAA production complexity (PC) of the first {MAA_WINDOW_SECONDS} s", True),
    RewardInfo("maa-pq", f"MAA production quality (PQ) of the first {MAA_WINDOW_SECONDS} s", True),
    RewardInfo("notes", f"notes starting in the first {MAA_WINDOW_SECONDS} s, /100 capped at 1 — offline, no MAA",
               False),
    RewardInfo("scale-consistency", f"MusPy scale consistency of the first {MAA_WINDOW_SECONDS} s (favours sparse "
                                    "outputs on its own) — offline, no MAA", False),
)
# Old names a saved configuration may still use.
REWARD_ALIASES = {"scale": "scale-consistency"}
MAX_REWARD_SPEC_CHARS = 1000


def canonical_reward(name: str) -> str:
    return REWARD_ALIASES.get(name, name)


def parse_reward_spec(spec: str) -> list[tuple[str, float]]:
    """`maa-ce` | `maa-ce=1,maa-pq=0.5` | `module:function=0.3` → [(name, weight)], names canonical
    (aliases resolved). Only the grammar is checked here; which names exist is the caller's question."""
    if not isinstance(spec, str) or len(spec) > MAX_REWARD_SPEC_CHARS:
        raise UserError(f"reward must be a string of at most {MAX_REWARD_SPEC_CHARS} characters")
    out: list[tuple[str, float]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, weight = part, 1.0
        if "=" in part:
            name, _, w = part.rpartition("=")
            try:
                weight = float(w)
            except ValueError:
                raise UserError(f"reward weight must be a number in {part!r}") from None
            if not math.isfinite(weight):
                raise UserError(f"reward weight must be finite in {part!r}")
        out.append((canonical_reward(name.strip()), weight))
    if not out:
        raise UserError("no reward given")
    return out


def reward_needs_maa(name: str) -> bool:
    return any(r.name == canonical_reward(name) and r.needs_maa for r in REWARDS)


# ============================================================================ training: run options
MAX_STEPS = 100_000
MAX_GROUP = 256
MAX_PROMPTS_PER_STEP = 256
MAX_SEED_GRPO = 2**32 - 1  # numpy's seed range
LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                "inverse_sqrt")  # transformers SchedulerType values that need no extra arguments
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")  # TRL GRPOConfig.loss_type
PROCEDURAL_PROMPTS = ("procedural", "proc", "procedural+note", "procedural-note")
# Options only the host sets for a job submitted over HTTP (paths on the host, the job folder).
HOST_OWNED_OPTIONS = frozenset({"maa", "soundfont"})


def _opt(description: str, **bounds):
    """An option's description and bounds; strict: no "5" for 5, no true for 1."""
    return Field(description=description, strict=True, **bounds)


def _choice(description: str):
    """A Literal option's description (a Literal accepts only its exact values anyway)."""
    return Field(description=description)


@dataclass
class GRPOOptions:
    """Every option of a SMART GRPO run a user chooses; the defaults are the paper's (preset "paper",
    §3.5). Types and bounds are checked by `validate_grpo_options` (the host checks /v1/train bodies
    with it, `training.grpo.GRPORunConfig.validate` checks its runs with it)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    model: Annotated[str, _opt("base model directory (a SMART policy directory); empty: the host's model",
                               max_length=4096)] = ""
    preset: Annotated[str, _opt("preset the other options override")] = "paper"
    steps: Annotated[int, _opt("iterations (optimizer steps); paper 200", ge=1, le=MAX_STEPS)] = 200
    prompts_per_step: Annotated[int, _opt("prompts per iteration; paper 8", ge=1, le=MAX_PROMPTS_PER_STEP)] = 8
    group: Annotated[int, _opt("completions per prompt (GRPO normalizes rewards within a group); paper 8",
                               ge=2, le=MAX_GROUP)] = 8
    max_completion_tokens: Annotated[int, _opt("longest completion in tokens; paper 256", ge=1, le=8192)] = 256
    reward: Annotated[str, _opt("reward spec: a name, or weighted 'maa-ce=1,maa-pq=0.5'; paper maa-ce",
                                min_length=1, max_length=MAX_REWARD_SPEC_CHARS)] = "maa-ce"
    beta: Annotated[float, _opt("KL coefficient to the frozen reference; paper 0.04", ge=0.0, le=1000.0,
                                allow_inf_nan=False)] = 0.04
    lr: Annotated[float, _opt("peak learning rate; paper 1e-4", gt=0.0, lt=1.0, allow_inf_nan=False)] = 1e-4
    lr_schedule: Annotated[Literal[LR_SCHEDULES], _choice("learning-rate schedule (to 0 over steps); paper "
                                                                 "linear")] = "linear"
    warmup_steps: Annotated[int, _opt("warm-up steps", ge=0, le=MAX_STEPS)] = 0
    temperature: Annotated[float, _opt("sampling temperature; GRPO needs sampled (not greedy) completions, "
                                            "so > 0; paper 1.0", gt=0.0, le=MAX_TEMPERATURE,
                                       allow_inf_nan=False)] = 1.0
    top_p: Annotated[float, _opt("nucleus sampling (1 = off)", gt=0.0, le=1.0, allow_inf_nan=False)] = 1.0
    top_k: Annotated[int, _opt("top-k sampling (0 = off)", ge=0, le=65536)] = 0
    loss_type: Annotated[Literal[LOSS_TYPES], _choice("TRL GRPO loss")] = "grpo"
    scale_rewards: Annotated[Literal["group", "batch", "none"],
                             _choice("advantage normalization (paper: group)")] = "group"
    epsilon: Annotated[float, _opt("PPO clipping range", gt=0.0, le=10.0, allow_inf_nan=False)] = 0.2
    num_iterations: Annotated[int, _opt("GRPO updates per generated batch (μ)", ge=1, le=64)] = 1
    max_grad_norm: Annotated[float, _opt("gradient clipping norm (0 = off)", ge=0.0, le=1e6,
                                         allow_inf_nan=False)] = 1.0
    seed: Annotated[int, _opt("random seed (prompts, sampling)", ge=0, le=MAX_SEED_GRPO)] = 0
    prompts: Annotated[str, _opt("procedural | procedural+note | data:DIR[:split] | MIDI "
                                               "files/folders (comma-separated; not over HTTP)",
                                 min_length=1, max_length=4096)] = "procedural"
    prompt_bars: Annotated[int, _opt("bars of a MIDI file used as its continuation prompt", ge=1, le=64)] = 4
    soundfont: Annotated[str | None, _opt("SoundFont for rendering (default: the shipped piano)",
                                          max_length=4096)] = None
    seconds: Annotated[float, _opt("seconds of audio the reward hears (MAA's window); paper 10", gt=0.0,
                                   le=MAX_SCORE_SECONDS, allow_inf_nan=False)] = 10.0
    sample_rate: Annotated[int, _opt("render sample rate", ge=8000, le=96000)] = 16000
    maa: Annotated[str | None, _opt("MAA checkpoint (default: the cached weights)", max_length=4096)] = None
    maa_random: Annotated[bool, _opt("random-weight MAA: plumbing/timing only, never real scores")] = False
    maa_random_size: Annotated[Literal["small", "full"], _choice("random MAA size (full: the real "
                                                                       "architecture, for timing)")] = "small"
    render_processes: Annotated[int | None, _opt("render worker processes (default: the cores)", ge=1,
                                                 le=1024)] = None
    save_every: Annotated[int, _opt("checkpoint every N steps (0 = only at the end)", ge=0,
                                    le=MAX_STEPS)] = 50
    keep_checkpoints: Annotated[int | None, _opt("keep only the newest N checkpoints", ge=1,
                                                 le=MAX_STEPS)] = None
    min_diversity: Annotated[float | None, _opt("guard: stop when diversity < F × its starting value",
                                                gt=0.0, lt=1.0, allow_inf_nan=False)] = None
    guard_action: Annotated[Literal["rollback", "stop"],
                            _choice("on a diversity collapse: rollback (final = best state above the "
                                             "floor) | stop")] = "rollback"
    guard_window: Annotated[int, _opt("steps averaged for the guard's baseline and check", ge=1,
                                      le=1000)] = 3
    max_drift: Annotated[float | None, _opt("drift guard: warn when the samples' musical features move more "
                                            "than F of the base model's standard deviations from its samples "
                                            "(mean over features; 0 = off)", ge=0.0, le=100.0,
                                            allow_inf_nan=False)] = 1.0
    drift_action: Annotated[Literal["warn", "stop"],
                            _choice("on drift beyond --max-drift: warn (keep training) | stop")] = "warn"
    micro_batch: Annotated[int | None, _opt("completions per forward/backward (default: the whole step)",
                                            ge=1, le=MAX_PROMPTS_PER_STEP * MAX_GROUP)] = None
    rollouts: Annotated[Literal["studio", "model"],
                        _choice("studio: rollouts sampled as the studio plays them (grammar, family factors) and "
                                "scored with those log-probabilities | model: the model's own distribution "
                                "(TRL's)")] = "studio"
    generation: Annotated[Literal["auto", "fast", "hf"],
                          _choice("fast (engine.fastdecode) | hf (transformers generate) | auto")] = "auto"
    device: Annotated[Literal["auto", "cpu", "cuda"], _choice("auto | cpu | cuda")] = "auto"
    bf16: Annotated[Literal["auto", "on", "off"], _choice("bfloat16 training (auto: on CUDA and on CPUs with native bf16 instructions)")] = "auto"
    use_vllm: Annotated[bool, _opt("TRL's vLLM generation (GPU + vllm installed)")] = False
    vllm_mode: Annotated[Literal["colocate", "server"], _choice("vLLM mode")] = "colocate"
    tensorboard: Annotated[bool, _opt("write TensorBoard logs")] = True
    cpu_threads: Annotated[int | None, _opt("torch CPU threads (1 is fastest on a busy machine)", ge=1,
                                            le=1024)] = None


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(GRPOOptions))


@dataclass(frozen=True)
class Preset:
    description: str
    options: dict


PRESETS: dict[str, Preset] = {
    "paper": Preset("the paper's run (§3.5): 200 steps, 8 prompts × 8 completions, MAA CE", {}),
    "paper-1000": Preset("the paper's over-optimization study (§5.2): 1000 steps", {"steps": 1000}),
    "aggressive": Preset("1000 steps without the KL penalty (β = 0)", {"steps": 1000, "beta": 0.0}),
    "quick": Preset("a few minutes on a laptop CPU with the offline notes reward: tries the whole loop",
                    {"steps": 8, "prompts_per_step": 2, "group": 4, "max_completion_tokens": 64, "reward": "notes"}),
    "smoke": Preset("seconds: checks the loop end to end with the offline reward",
                    {"steps": 4, "prompts_per_step": 2, "group": 4, "max_completion_tokens": 64, "reward": "notes",
                     "save_every": 2}),
}

_OPTIONS_ADAPTER = TypeAdapter(GRPOOptions)
_ERROR_KINDS = {"int_type": "int", "int_parsing": "int", "int_from_float": "int", "float_type": "float",
                "float_parsing": "float", "string_type": "str", "bool_type": "bool", "bool_parsing": "bool"}


def _option_error(err: dict) -> str:
    """One pydantic error as `name must …` (the CLI and HTTP messages)."""
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    name = loc[0] if loc else "options"
    kind, ctx, value = err.get("type", ""), err.get("ctx") or {}, err.get("input")
    if kind == "unexpected_keyword_argument":
        return f"unknown option: {name}"
    if kind in _ERROR_KINDS:
        if value is None:
            return f"{name} cannot be null"
        return f"{name} must be {_ERROR_KINDS[kind]}, not {type(value).__name__}"
    bound = {"greater_than_equal": ("≥", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("≤", "le"),
             "less_than": ("<", "lt")}.get(kind)
    if bound is not None:
        return f"{name} must be {bound[0]} {ctx.get(bound[1])}"
    if kind == "literal_error":
        return f"{name} must be one of {ctx.get('expected', '')}"
    if kind == "finite_number":
        return f"{name} must be finite"
    if kind in ("string_too_long", "string_too_short"):
        return f"{name} must be {ctx.get('max_length') or ctx.get('min_length')} characters at " \
               f"{'most' if kind == 'string_too_long' else 'least'}"
    return f"{name}: {err.get('msg', 'invalid value')}"


def validate_grpo_options(values: dict) -> GRPOOptions:
    """`values` (option name → value) as checked options; UserError naming each problem.

    Checks every option's type and bounds, the preset, the reward spec's grammar and weights, and
    what options imply about each other (micro_batch divides the step's completions)."""
    if not isinstance(values, dict):
        raise UserError("the options must be a JSON object")
    try:
        options = _OPTIONS_ADAPTER.validate_python(values)
    except ValidationError as exc:
        raise UserError("; ".join(_option_error(e) for e in exc.errors())) from None
    if options.preset not in PRESETS:
        raise UserError(f"unknown preset {options.preset!r} (choose from {', '.join(PRESETS)})")
    parse_reward_spec(options.reward)
    per_step = options.prompts_per_step * options.group
    if options.micro_batch is not None and per_step % options.micro_batch:
        raise UserError(f"micro_batch {options.micro_batch} must divide the completions per step ({per_step})")
    return options


def option_values(options) -> dict:
    """The GRPOOptions fields of `options` (a GRPOOptions or a subclass such as GRPORunConfig)."""
    return {name: getattr(options, name) for name in OPTION_NAMES}


def options_with_preset(preset: str, overrides: dict) -> dict:
    """Option values of `preset` with `overrides` (None values are not overrides) on top, unchecked."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    return {**PRESETS[preset].options, **{k: v for k, v in overrides.items() if v is not None}, "preset": preset}


def _option_catalogue(adapter: TypeAdapter, names: Sequence[str]) -> list[dict]:
    """Name, type, nullability, default, description, bounds and settability of each option of `adapter`."""
    schema = adapter.json_schema()["properties"]
    out = []
    for name in names:
        prop = dict(schema[name])
        variants = prop.pop("anyOf", None) or [prop]
        nullable = any(v.get("type") == "null" for v in variants)
        main = next((v for v in variants if v.get("type") != "null"), {})
        entry = {"name": name, "type": {"integer": "int", "number": "float", "string": "str",
                                        "boolean": "bool"}.get(main.get("type"), main.get("type")),
                 "nullable": nullable, "default": prop.get("default"), "description": prop.get("description", ""),
                 "settable": name not in HOST_OWNED_OPTIONS}
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "maxLength"):
            if key in main:
                entry[key] = main[key]
        if name == "preset":
            entry["enum"] = list(PRESETS)
        out.append(entry)
    return out


def train_options(*, maa_weights: bool) -> dict:
    """The body of GET /v1/train/options: what a client may ask a host to train with (GRPO options, presets,
    rewards; under "taste" the options and limits of POST /v1/taste/tune)."""
    from engine.taste import MIN_PAIRS  # numpy only

    taste = {"options": _option_catalogue(_TASTE_ADAPTER, TASTE_OPTION_NAMES), "methods": list(TASTE_METHODS),
             "min_pairs": MIN_PAIRS, "max_pairs": MAX_TASTE_PAIRS, "max_midi_bytes": MAX_TASTE_MIDI_BYTES}
    return {"options": _option_catalogue(_OPTIONS_ADAPTER, OPTION_NAMES), "taste": taste,
            "presets": {name: {"description": p.description, "options": dict(p.options)}
                        for name, p in PRESETS.items()},
            "rewards": [{"name": r.name, "description": r.description, "needs_maa": r.needs_maa} for r in REWARDS],
            "reward_aliases": dict(REWARD_ALIASES), "maa_weights": bool(maa_weights),
            "prompts": list(PROCEDURAL_PROMPTS[::2]) + ["data:DIR[:split]"]}


# ============================================================================ training: taste tuning
# POST /v1/taste/tune (engine.host.jobs): fine-tune the policy toward a musician's preference pairs
# (`training.taste.tune` in a host job). Options left None take the tuner's own default.
TASTE_JOB_KIND = "taste-tune"  # job.json config "kind" (a GRPO job has none)
TASTE_METHODS = ("dpo", "grpo")
MAX_TASTE_PAIRS = 4000  # pairs per submission (the host's body limit usually binds first)
MAX_TASTE_MIDI_BYTES = 256 * 1024  # one decoded MIDI file of a pair (a prompt may be a whole sketch)
MAX_SYNTHETIC_PROMPTS = 256


@dataclass
class TasteTuneOptions:
    """What a client chooses for a taste-tuning job; checked by `validate_taste_tune_options`."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    model: Annotated[str, _opt("base model directory (a SMART policy directory); empty: the host's model",
                               max_length=4096)] = ""
    method: Annotated[Literal[TASTE_METHODS], _choice("dpo: TRL DPOTrainer on the pairs (plus taste-ranked "
                                                      "fresh samples) | grpo: GRPO with the taste as its reward "
                                                      "(KL and diversity guard)")] = "dpo"
    steps: Annotated[int | None, _opt("optimizer steps (default: the tuner's, dpo 2 epochs, grpo 20)", ge=1,
                                      le=MAX_STEPS)] = None
    beta: Annotated[float | None, _opt("KL strength (default: dpo 0.1, grpo 0.04)", ge=0.0, le=1000.0,
                                       allow_inf_nan=False)] = None
    lr: Annotated[float | None, _opt("learning rate (default: the tuner's)", gt=0.0, lt=1.0,
                                     allow_inf_nan=False)] = None
    synthetic_prompts: Annotated[int | None, _opt("dpo: prompts whose fresh samples the taste ranks into extra "
                                                  "pairs (0 = the musician's pairs only)", ge=0,
                                                  le=MAX_SYNTHETIC_PROMPTS)] = None
    seed: Annotated[int, _opt("random seed (sampling, example order)", ge=0, le=MAX_SEED_GRPO)] = 0
    cpu_threads: Annotated[int | None, _opt("torch CPU threads (1 is fastest on a busy machine)", ge=1,
                                            le=1024)] = None
    max_drift: Annotated[float | None, _opt("drift guard: warn when the tuned model's samples' musical features "
                                            "move more than F of the base model's standard deviations from its "
                                            "samples at the same prompts and seed (0 = off)", ge=0.0, le=100.0,
                                            allow_inf_nan=False)] = 1.0
    drift_action: Annotated[Literal["warn", "stop"],
                            _choice("on drift beyond max_drift: warn (keep tuning) | stop")] = "warn"


TASTE_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(TasteTuneOptions))
_TASTE_ADAPTER = TypeAdapter(TasteTuneOptions)


def validate_taste_tune_options(values: dict) -> TasteTuneOptions:
    """`values` (option name → value) as checked taste-tuning options; UserError naming each problem."""
    if not isinstance(values, dict):
        raise UserError("the options must be a JSON object")
    try:
        return _TASTE_ADAPTER.validate_python(values)
    except ValidationError as exc:
        raise UserError("; ".join(_option_error(e) for e in exc.errors())) from None
