"""Checking a submission (/v1/train, /v1/taste/tune): every option against the contract and the host's
rules (its model, folders, MAA weights, cores, devices), every MIDI file decoded — a refused job is
never created."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from engine.api import (
    HOST_OWNED_OPTIONS,
    MAX_TASTE_MIDI_BYTES,
    MAX_TASTE_PAIRS,
    PRESETS,
    PROCEDURAL_PROMPTS,
    REWARDS,
    TASTE_OPTION_NAMES,
    option_values,
    parse_reward_spec,
    reward_needs_maa,
    validate_grpo_options,
    validate_taste_tune_options,
)
from engine.errors import UserError
from engine.host.wire import decode_midi
from engine.music import atomic_write_bytes

MAX_PROMPTS_MIDI = 256
MAX_PROCEDURAL_PROMPTS = 256
# Options a client may not set: the host decides where a run lives, when it resumes, and which of its
# files (MAA weights, SoundFont) a run uses.
HOST_OWNED = frozenset({"out_dir", "resume"}) | HOST_OWNED_OPTIONS


def _no_nul(path: str, what: str) -> str:
    if "\0" in path:
        raise UserError(f"{what} path contains a NUL byte")
    return path


def _any_model_dir(path: str) -> Path:
    p = Path(_no_nul(path, "model")).expanduser().resolve()
    if not p.is_dir():
        raise UserError(f"model directory not found on the host: {p}")
    return p


def _any_data_dir(path: str) -> Path:
    return Path(_no_nul(path, "data folder")).expanduser().resolve()


@dataclass
class SubmissionRules:
    """What a /v1/train body is checked against: the host's model, which folders clients may name,
    its MAA weights, cores and devices. The host fills it in when the jobs router starts."""

    default_model: Callable[[], str | None] = lambda: None  # the host's active model, when none is given
    model_dir: Callable[[str], Path] = _any_model_dir  # a model directory clients may use, or UserError
    data_dir: Callable[[str], Path] = _any_data_dir  # a prepared-data folder clients may use, or UserError
    maa_weights: bool | None = None  # None: unknown (not refused here; the job says so if they are missing)
    maa_reason: str | None = None
    cores: int = os.cpu_count() or 1
    cuda: bool | None = None


def _model_context(model_dir: Path) -> int | None:
    try:
        config = json.loads((model_dir / "config.json").read_text())
        return int(config["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_submission(body: Any, rules: SubmissionRules) -> tuple[dict, list[bytes], int]:
    """(GRPO option values, prompt MIDI files, procedural prompts to mix in) from a /v1/train body.

    Raises UserError with a message for the client on anything the job would fail on."""
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    body = dict(body)
    prompts_midi = body.pop("prompts_midi", None)
    procedural = body.pop("procedural_prompts", 0)
    owned = sorted(k for k in body if k in HOST_OWNED)
    if owned:
        raise UserError(f"{', '.join(owned)} cannot be set: the host decides where a job runs, when it resumes "
                        "and which of its files (MAA weights, SoundFont) it uses")
    if body.get("preset") is None:
        body.pop("preset", None)
    validate_grpo_options(body)  # types and bounds of what the client sent
    preset = body.get("preset", "paper")
    values = {**PRESETS[preset].options, **body, "preset": preset}
    options = validate_grpo_options(values)

    if not options.model:
        options.model = rules.default_model()
        if not options.model:
            raise UserError("no model given and the host has no model directory to fine-tune")
    model = rules.model_dir(options.model)
    options.model = str(model)
    context = _model_context(model)
    if context is not None and options.max_completion_tokens >= context - 8:
        raise UserError(f"max_completion_tokens must be below the model's context ({context} - 8)")

    specs = parse_reward_spec(options.reward)
    custom = [name for name, _ in specs if ":" in name]
    if custom:
        raise UserError(f"custom reward functions ({', '.join(custom)}) cannot be started over HTTP; "
                        "use a named reward or `smart grpo` on the host")
    known = {r.name for r in REWARDS}
    for name, _ in specs:
        if name not in known:
            raise UserError(f"unknown reward {name!r} (choose from {', '.join(sorted(known))})")
    maa_rewards = [name for name, _ in specs if reward_needs_maa(name)]
    if maa_rewards and not options.maa_random and rules.maa_weights is False:
        offline = ", ".join(r.name for r in REWARDS if not r.needs_maa)
        raise UserError(f"reward {', '.join(maa_rewards)} needs MAA weights, and this host has none"
                        f"{' (' + rules.maa_reason + ')' if rules.maa_reason else ''}: choose an offline reward "
                        f"({offline}), or maa_random for a plumbing test")
    for name in ("render_processes", "cpu_threads"):
        value = getattr(options, name)
        if value is not None and value > rules.cores:
            raise UserError(f"{name} {value} is more than this host's {rules.cores} CPU cores")
    if rules.cuda is False and (options.device == "cuda" or options.use_vllm):
        raise UserError(f"{'device cuda' if options.device == 'cuda' else 'use_vllm'} needs a CUDA device, and "
                        "this host has none")

    if not isinstance(procedural, int) or isinstance(procedural, bool) or not 0 <= procedural <= MAX_PROCEDURAL_PROMPTS:
        raise UserError(f"procedural_prompts must be an integer 0..{MAX_PROCEDURAL_PROMPTS}")
    midi_files = _prompt_files(prompts_midi)
    if procedural and not midi_files:
        raise UserError("procedural_prompts mixes procedural prompts into prompts_midi; without MIDI prompts "
                        "use prompts=\"procedural\"")
    if midi_files and "prompts" in body:
        raise UserError("give either prompts_midi or prompts, not both")
    if not midi_files:
        spec = options.prompts
        if spec.startswith("data:"):
            rest = spec[len("data:"):]
            directory, split = rest, None
            if ":" in rest and rest.rsplit(":", 1)[1] in ("train", "val", "test") and not Path(rest).exists():
                directory, split = rest.rsplit(":", 1)
            if not directory:
                raise UserError("prompts data:DIR needs a folder")
            data = rules.data_dir(directory)
            options.prompts = f"data:{data}" + (f":{split}" if split else "")
        elif spec not in PROCEDURAL_PROMPTS:
            raise UserError("prompts must be procedural, procedural+note or data:DIR on the host "
                            "(send your own MIDI prompts as prompts_midi)")
    return option_values(options), midi_files, int(procedural)


def _prompt_files(prompts_midi: Any) -> list[bytes]:
    """The client's MIDI prompts, each decoded and checked (runs in a worker thread, never the event loop)."""
    if prompts_midi is None or prompts_midi == "procedural":
        return []
    if not isinstance(prompts_midi, list):
        raise UserError("prompts_midi must be a list of base64 MIDI files or \"procedural\"")
    if not prompts_midi:
        raise UserError("prompts_midi is empty (omit it or pass \"procedural\" for procedural prompts)")
    if len(prompts_midi) > MAX_PROMPTS_MIDI:
        raise UserError(f"at most {MAX_PROMPTS_MIDI} prompt MIDI files")
    out = []
    for i, item in enumerate(prompts_midi):
        data, clip = decode_midi(item, f"prompts_midi[{i}]")
        if not clip.notes:
            raise UserError(f"prompts_midi[{i}] has no notes")
        out.append(data)
    return out


@dataclass(frozen=True)
class TastePair:
    """One judged pair of a /v1/taste/tune body, decoded and checked."""

    choice: str  # "A", "B" or "tie"
    a: bytes
    b: bytes
    prompt: bytes | None
    source: str | None


TASTE_PAIR_KEYS = frozenset({"choice", "a", "b", "prompt", "source"})
MAX_SOURCE_CHARS = 64


def check_taste_submission(body: Any, rules: SubmissionRules) -> tuple[dict, list[TastePair]]:
    """(taste-tuning option values, the pairs) from a /v1/taste/tune body: options by name
    (`engine.api.TasteTuneOptions`) and "pairs": [{"choice": "A"|"B"|"tie", "a": b64 MIDI, "b": b64 MIDI,
    "prompt": b64 MIDI | null, "source": str?}]. Raises UserError with a message for the client on
    anything the job would fail on (runs in a worker thread: it decodes every MIDI file)."""
    from engine.preferences import normalize_choice
    from engine.taste import MIN_PAIRS

    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    body = dict(body)
    raw_pairs = body.pop("pairs", None)
    owned = sorted(k for k in body if k in HOST_OWNED)
    if owned:
        raise UserError(f"{', '.join(owned)} cannot be set: the host decides where a job runs and when it resumes")
    options = validate_taste_tune_options(body)
    if not options.model:
        options.model = rules.default_model()
        if not options.model:
            raise UserError("no model given and the host has no model directory to tune")
    options.model = str(rules.model_dir(options.model))
    if options.cpu_threads is not None and options.cpu_threads > rules.cores:
        raise UserError(f"cpu_threads {options.cpu_threads} is more than this host's {rules.cores} CPU cores")

    if not isinstance(raw_pairs, list) or not raw_pairs:
        raise UserError("pairs must be a non-empty list of judged pairs "
                        "({\"choice\": \"A\"|\"B\"|\"tie\", \"a\": base64 MIDI, \"b\": …, \"prompt\": … | null})")
    if len(raw_pairs) > MAX_TASTE_PAIRS:
        raise UserError(f"at most {MAX_TASTE_PAIRS} pairs per job (got {len(raw_pairs)})")
    pairs = []
    for i, item in enumerate(raw_pairs):
        if not isinstance(item, dict):
            raise UserError(f"pairs[{i}] must be an object")
        unknown = sorted(set(item) - TASTE_PAIR_KEYS)
        if unknown:
            raise UserError(f"pairs[{i}]: unknown field {', '.join(unknown)}")
        try:
            choice = normalize_choice(item.get("choice", ""))
        except ValueError as exc:
            raise UserError(f"pairs[{i}]: {exc}") from None
        source = item.get("source")
        if source is not None and (not isinstance(source, str) or len(source) > MAX_SOURCE_CHARS):
            raise UserError(f"pairs[{i}].source must be a string of at most {MAX_SOURCE_CHARS} characters")
        a = _pair_midi(item.get("a"), f"pairs[{i}].a")
        b = _pair_midi(item.get("b"), f"pairs[{i}].b")
        prompt = _pair_midi(item["prompt"], f"pairs[{i}].prompt") if item.get("prompt") is not None else None
        pairs.append(TastePair(choice, a, b, prompt, source))
    decisive = sum(p.choice != "tie" for p in pairs)
    if decisive < MIN_PAIRS:
        raise UserError(f"{decisive} decisive pair{'s' if decisive != 1 else ''} (ties do not count): a taste needs "
                        f"at least {MIN_PAIRS} before it can be tuned toward")
    return {name: getattr(options, name) for name in TASTE_OPTION_NAMES}, pairs


def _pair_midi(value: Any, where: str) -> bytes:
    return decode_midi(value, where, max_bytes=MAX_TASTE_MIDI_BYTES)[0]


def write_procedural_prompts(directory: Path, model_dir: str, count: int, seed: int) -> list[Path]:
    """`count` procedural prompts (random meter and tempo with a first note, paper §3.5) as MIDI files,
    so they mix with a user's MIDI prompts in one prompt set."""
    from engine.tokenizer import RemiTokenizer

    tokenizer = RemiTokenizer.load(model_dir)
    rng = random.Random(seed)
    out = []
    for i in range(count):
        clip = tokenizer.decode(tokenizer.procedural_prompt(rng, first_note=True))
        path = directory / f"procedural-{i:03d}.mid"
        atomic_write_bytes(path, clip.to_midi_bytes())
        out.append(path)
    return out
