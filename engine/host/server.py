"""The policy host: an HTTP service (FastAPI + uvicorn) that generates, renders and scores for the studio.

`smart serve` holds the policy, the renderer and the MAA scorer on the best device it has. The studio
talks to it with `engine.host_client` (by default to one it starts on 127.0.0.1 with a random token).

Endpoints (OpenAPI at /docs): GET /v1/health, GET /v1/models, POST /v1/models/activate,
POST /v1/generate (NDJSON stream of note / candidate / done events), POST /v1/score.
Each feature is an APIRouter; later features (training jobs) add theirs with `app.include_router`
and reach the shared state as `request.app.state.host`.

Concurrency: every generation request runs its music-level logic (prompt building, note decoding,
infill clipping, rendering, scoring) in a worker thread, but token decoding goes through one
`DecodeScheduler` thread that runs the rows of all concurrent requests as one batch: new requests
join a running batch (their prompts prefilled together, repeated ones reused from a prompt cache), finished
ones are compacted out, and each request keeps its own sampling settings and random generator, so a
request decoded alone samples exactly what `Policy.continue_clip` would.

Security (docs/security.md): a token (constant-time compared bearer token) is required to listen
beyond loopback; Host and Origin headers are checked (DNS rebinding, cross-origin pages); bodies must be
JSON and are bounded; every number in a request is range-checked (the contract, `engine.api`); client
MIDI is parsed in worker threads; malformed payloads get 4xx. This module must never import Qt.
"""


from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from engine.api import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_BARS,
    MAX_CANDIDATES,
    MAX_NEW_TOKENS,
    MAX_SCORE_SECONDS,
    PREPARED_DATA_MARKER,
    SCORE_SAMPLE_RATE,
    ActivateRequest,
    GenerateRequest,
    MaaStatus,
    ScoreRequest,
)
from engine.errors import UserError, first_line
from engine.fastdecode import Phi3Decoder
from engine.host.middleware import (
    BearerAuthMiddleware,
    BodyLimitMiddleware,
    BrowserGuardMiddleware,
    HostRules,
    JsonBodyMiddleware,
    event_stream_response,
)
from engine.host.scheduler import END_OF_STREAM, DecodeScheduler
from engine.host.wire import b64decode, decode_midi, json_safe
from engine.meter import ModelClip
from engine.music import Clip, Note
from engine.policy import (
    DEFAULT_MODEL_DIR,
    GenerationSettings,
    NoteEvent,
    Policy,
    PolicyLoadError,
)

log = logging.getLogger("smart.host")




# ============================================================================ host state
@dataclass
class HostStats:
    requests: int = 0
    active: int = 0
    completed: int = 0
    cancelled: int = 0  # generation requests stopped because their client went away
    failed: int = 0
    rejected_busy: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=1000))

    def as_dict(self) -> dict:
        lat = sorted(self.latencies)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3)) if lat else (lambda q: None)
        return {"requests": self.requests, "active": self.active, "completed": self.completed,
                "cancelled": self.cancelled, "failed": self.failed, "rejected_busy": self.rejected_busy,
                "latency_p50_s": pct(0.5), "latency_p95_s": pct(0.95)}


def _is_model_dir(path: Path) -> bool:
    from engine.tokenizer import REMI_CONFIG_FILE

    return all((path / f).is_file() for f in ("config.json", "model.safetensors", REMI_CONFIG_FILE))


class HostState:
    """What the routers share: the active policy, scorer, scheduler, executor and counters."""

    def __init__(self, policy: Policy, *, scorer=None, maa_reason: str | None = None, token: str | None = None,
                 model_roots: Sequence[str | os.PathLike] = (), max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 max_batch_rows: int = 32, max_active: int = 64, soundfont: str | None = None,
                 decode_weights: str = "model", allowed_dirs: Sequence[str | os.PathLike] | None = None):
        self.policy = policy
        self.scorer = scorer
        self.maa_reason = maa_reason
        self.token = token or None
        self.max_body_bytes = max_body_bytes
        self.max_active = max_active
        self.soundfont = soundfont
        self.model_roots = [Path(r) for r in model_roots]
        # Folders whose models and data clients may name (/v1/models/activate, /v1/train) besides the
        # models the host lists; None: any folder on this machine (a loopback host serves its own user).
        self.allowed_dirs = None if allowed_dirs is None else [Path(d).expanduser().resolve() for d in allowed_dirs]
        self.registered: list[Path] = [p for p in [policy.path] if p is not None]
        self.scheduler = DecodeScheduler(max_rows=max(max_batch_rows, MAX_CANDIDATES), decode_weights=decode_weights)
        self.scheduler.packed_for(policy.model)  # pack now, not on the first request
        # Generation workers mostly wait on the scheduler; one per admitted request.
        self.executor = ThreadPoolExecutor(max_workers=max_active, thread_name_prefix="smart-generate")
        self.stats = HostStats()
        self.lock = threading.Lock()  # stats and the active-policy swap
        self.activation_lock = threading.Lock()
        self.scorer_lock = threading.Lock()  # one MAA forward at a time (memory, thread safety)
        self.started_at = time.time()
        self._request_ids = itertools.count(1)

    def close(self) -> None:
        self.scheduler.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ descriptions
    def maa_status(self) -> dict:
        if self.scorer is None:
            return {"status": MaaStatus.MISSING, "reason": self.maa_reason or "no MAA scorer loaded", "source": None}
        random_weights = bool(getattr(self.scorer, "is_random", False))
        return {"status": MaaStatus.RANDOM_WEIGHTS if random_weights else MaaStatus.AVAILABLE,
                "reason": "random weights: scores are for tests and timing only" if random_weights else None,
                "source": getattr(self.scorer, "source", None)}

    def known_models(self) -> list[dict]:
        active = self.policy.path.resolve() if self.policy.path else None
        found: dict[Path, str] = {}
        for p in [DEFAULT_MODEL_DIR]:
            found.setdefault(p.resolve(), "default")
        for p in self.registered:
            found.setdefault(p.resolve(), "registered")
        for root in self.model_roots:
            for candidate in _scan_model_dirs(root):
                found.setdefault(candidate.resolve(), "checkpoint")
        return [{"path": str(p), "source": src, "available": _is_model_dir(p), "active": p == active}
                for p, src in found.items()]

    # ------------------------------------------------------------------ folders clients may name
    def _client_path(self, path: str, what: str) -> Path:
        """`path` resolved (symlinks and `..` followed), if clients may name it; UserError otherwise.

        A restricted host answers the same for a folder that does not exist as for one it may not
        use, so clients cannot probe its file system."""
        if "\0" in path:
            raise UserError(f"{what} path contains a NUL byte")
        resolved = Path(path).expanduser().resolve()
        if self.allowed_dirs is None:
            return resolved
        roots = [DEFAULT_MODEL_DIR.resolve(), *(r.resolve() for r in list(self.model_roots)), *self.allowed_dirs]
        listed = {p.resolve() for p in list(self.registered)}
        if resolved in listed or any(resolved.is_relative_to(root) for root in roots):
            return resolved
        raise UserError(f"{what} {path} is not one this host offers: use one of its models (GET /v1/models) or a "
                        "folder under its --allow-dir folders")

    def client_model_dir(self, path: str) -> Path:
        """The model directory a client named (activation, fine-tuning), checked; UserError otherwise."""
        resolved = self._client_path(path, "model")
        if not resolved.is_dir():
            raise UserError(f"model directory not found on the host: {path}")
        if not _is_model_dir(resolved):
            from engine.tokenizer import REMI_CONFIG_FILE

            raise UserError(f"{path} is not a model directory (it needs config.json, model.safetensors and "
                            f"{REMI_CONFIG_FILE})")
        return resolved

    def client_data_dir(self, path: str) -> Path:
        """A prepared-data folder (`smart prepare-data`) a client named for data:DIR prompts."""
        resolved = self._client_path(path, "data folder")
        if not resolved.is_dir():
            raise UserError(f"prompts data folder not found on the host: {path}")
        if not (resolved / PREPARED_DATA_MARKER).is_file():
            raise UserError(f"{path} is not prepared data (no {PREPARED_DATA_MARKER}; run `smart prepare-data`)")
        return resolved

    def next_request_id(self) -> int:
        return next(self._request_ids)


def _scan_model_dirs(root: Path, depth: int = 2) -> list[Path]:
    """Model directories at most `depth` levels below `root` (e.g. runs/NAME/checkpoint-N)."""
    out: list[Path] = []
    if not root.is_dir():
        return out
    level = [root]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            if _is_model_dir(d):
                out.append(d)
                continue
            try:
                nxt.extend(sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")))
            except OSError:
                continue
        level = nxt[:1000]
    return out


# ============================================================================ helpers
class BadRequest(UserError):
    """A payload that parsed but cannot be used: 400 (or `status`) with the message (a plain UserError: 400)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _note_json(n: Note) -> dict:
    return {"start": n.start, "pitch": n.pitch, "duration": n.duration, "velocity": n.velocity}


def score_clips(state: HostState, clips: Sequence[Clip]) -> list[dict]:
    """MAA scores of clips rendered through the SoundFont (raises if MAA or rendering fails)."""
    from engine.render import render

    audios = [render(c, sample_rate=SCORE_SAMPLE_RATE, max_seconds=MAX_SCORE_SECONDS, soundfont=state.soundfont)
              for c in clips]
    with state.scorer_lock:
        return [s.as_dict() for s in state.scorer.score(audios, SCORE_SAMPLE_RATE)]


# ============================================================================ generation worker
class GenerationRun:
    """One /v1/generate request: runs in a worker thread, emits events through `emit`."""

    def __init__(self, state: HostState, req, prompt: ModelClip | None, emit: Callable[[dict], None]):
        self.state = state
        self.req = req
        self.prompt = prompt  # re-barred once, by _prepare_prompt: the policy trusts its bars
        self.emit = emit
        self.cancelled = threading.Event()
        self.id = state.next_request_id()

    def settings(self) -> GenerationSettings:
        return self.req.settings()

    def run(self) -> None:
        t0 = time.monotonic()
        state, req, prompt = self.state, self.req, self.prompt
        policy = state.policy  # a model activated meanwhile serves the next request
        view = policy.using(state.scheduler)  # this request's rows join the shared batch
        settings = self.settings()

        def on_note(ev: NoteEvent) -> None:
            self.emit({"event": "note", "candidate": ev.candidate, "note": _note_json(ev.note)})

        stop = self.cancelled.is_set
        if req.infill is not None:
            a, b = req.infill.start_bar, req.infill.end_bar
            cands = view.infill(prompt, a, b, settings, on_note=on_note, should_stop=stop)
            span, ppq = (prompt.clip.bar_tick(a), prompt.clip.bar_tick(b)), prompt.clip.ppq
        elif prompt is not None:
            at = prompt.clip.end_tick if req.at_tick is None else req.at_tick
            cands = view.continue_clip(prompt, settings, at_tick=req.at_tick, on_note=on_note, should_stop=stop)
            span, ppq = (at, None), prompt.clip.ppq
        else:
            cands, _prompts = view.generate_procedural(settings, first_note=req.first_note, on_note=on_note,
                                                       should_stop=stop)
            span, ppq = (0, None), 480
        if self.cancelled.is_set():
            return

        from engine.features import midi_features

        random_weights = bool(getattr(state.scorer, "is_random", False)) if state.scorer is not None else None
        out = []
        for i, c in enumerate(cands):
            if self.cancelled.is_set():
                return
            start, end = span
            # The candidate's own music (from where it starts), for features and listening scores.
            generated = c.clip.slice_ticks(start, end if end is not None else max(c.clip.end_tick, start) + 1)
            scores, score_error = None, None
            if not req.score:
                score_error = "not requested"
            elif state.scorer is None:
                score_error = state.maa_status()["reason"]
            elif not generated.notes:
                score_error = "no notes to score"
            else:
                try:
                    scores = score_clips(state, [generated])[0]
                except Exception as exc:  # a render/score failure costs this candidate its score, not the request
                    log.exception("scoring candidate %d of request %d failed", i, self.id)
                    score_error = f"scoring failed: {first_line(exc)}"
            cand = {"candidate": i, "midi": _b64encode(c.clip.to_midi_bytes()), "notes": len(c.notes),
                    "bars": c.bars, "tokens": len(c.token_ids), "finished_by": c.finished_by, "end_tick": c.end_tick,
                    "features": json_safe(midi_features(generated)), "scores": json_safe(scores),
                    "random_weights": random_weights if scores is not None else None}
            if score_error is not None:
                cand["scores_error"] = score_error
            out.append(cand)
            self.emit({"event": "candidate", **cand})
        self.emit({"event": "done", "done": True, "request_id": self.id, "ppq": ppq, "candidates": out,
                   "model": policy.describe(), "elapsed_s": round(time.monotonic() - t0, 4)})



# ============================================================================ routers
def health_router():
    router = APIRouter(tags=["host"])

    @router.get("/v1/health")
    def health(request: Request) -> dict:
        """Device, model, MAA status and load counters."""
        state: HostState = request.app.state.host
        with state.lock:
            stats = state.stats.as_dict()
        return {"status": "ok", "device": str(state.policy.device), "model": state.policy.describe(),
                "decode_weights": state.scheduler.decode_weights,
                "maa": state.maa_status(), "auth": state.token is not None,
                "uptime_s": round(time.time() - state.started_at, 1),
                "limits": {"candidates": MAX_CANDIDATES, "bars": MAX_BARS, "max_new_tokens": MAX_NEW_TOKENS,
                           "body_bytes": state.max_body_bytes, "active_requests": state.max_active},
                "stats": stats, "decode": state.scheduler.stats.as_dict()}

    return router


def models_router():
    router = APIRouter(tags=["models"])

    @router.get("/v1/models")
    def models(request: Request) -> dict:
        """The loaded model and the model directories the host knows of."""
        state: HostState = request.app.state.host
        return {"active": state.policy.describe(), "models": state.known_models()}

    @router.post("/v1/models/activate")
    async def activate(body: ActivateRequest, request: Request) -> dict:
        """Load a model directory (safetensors only); on failure the current model stays active."""
        state: HostState = request.app.state.host

        def load() -> Policy:
            try:
                state.client_model_dir(body.path)
            except UserError as exc:
                raise PolicyLoadError(str(exc)) from None
            with state.activation_lock:  # one load at a time (each may hold a model's worth of memory)
                try:
                    policy = Policy.load(body.path, device=state.policy.device)
                except PolicyLoadError:
                    raise
                except Exception as exc:  # noqa: BLE001 -- a junk tokenizer file raises KeyError, TypeError, …
                    raise PolicyLoadError(f"model in {body.path} does not load: "
                                          f"{first_line(exc) or type(exc).__name__}") from None
            try:  # refuse models the decoder cannot run before they replace a working one
                Phi3Decoder(policy.model, batch_size=1, max_len=8)
                if int(policy.model.config.num_hidden_layers) < 1:
                    raise ValueError("it has no layers (num_hidden_layers < 1)")
            except Exception as exc:  # noqa: BLE001 -- e.g. 0 layers: IndexError deep in the decoder
                raise PolicyLoadError(f"model in {body.path} cannot be decoded: "
                                      f"{first_line(exc) or type(exc).__name__}") from None
            return policy

        try:
            policy = await run_in_threadpool(load)
        except PolicyLoadError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        with state.lock:
            state.policy = policy
            if policy.path is not None and all(p.resolve() != policy.path.resolve() for p in state.registered):
                state.registered.append(policy.path)
        log.info("activated model %s", policy.path)
        return {"active": policy.describe()}

    return router


def generate_router():
    router = APIRouter(tags=["generate"])

    @router.post("/v1/generate", responses={200: {
        "content": {"application/x-ndjson": {}},
        "description": "NDJSON events: started, note…, candidate…, done (or error)"}})
    async def generate(body: GenerateRequest, request: Request):
        """Continue / infill the prompt (or a procedural prompt); stream notes, then scored candidates."""
        state: HostState = request.app.state.host
        prompt, meter_note = None, None
        if body.prompt_midi is not None:
            try:
                prompt, meter_note = await run_in_threadpool(_prepare_prompt, state, body)
            except UserError as exc:  # BadRequest, or a request file that does not decode
                raise HTTPException(status_code=getattr(exc, "status", 400), detail=str(exc)) from None
        with state.lock:
            if state.stats.active >= state.max_active:
                state.stats.rejected_busy += 1
                raise HTTPException(status_code=503, detail=f"host busy: {state.max_active} requests in progress",
                                    headers={"Retry-After": "1"})
            state.stats.active += 1
            state.stats.requests += 1

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the server loop is gone (shutdown)
                run.cancelled.set()

        run = GenerationRun(state, body, prompt, emit)
        t0 = time.monotonic()

        def work() -> None:
            status = "failed"
            try:
                run.run()
                status = "cancelled" if run.cancelled.is_set() else "completed"
            except Exception as exc:
                log.exception("generation request %d failed", run.id)
                emit({"event": "error", "request_id": run.id, "message": first_line(exc)})
            finally:
                emit(END_OF_STREAM)
                with state.lock:
                    state.stats.active -= 1
                    setattr(state.stats, status, getattr(state.stats, status) + 1)
                    if status == "completed":
                        state.stats.latencies.append(time.monotonic() - t0)

        # Started now, not when the response starts streaming: the accounting above then always runs.
        try:
            state.executor.submit(work)
        except RuntimeError:  # executor shut down: the host is stopping
            with state.lock:
                state.stats.active -= 1
            raise HTTPException(status_code=503, detail="the host is shutting down") from None

        async def lines():
            try:
                yield json.dumps({"event": "started", "request_id": run.id, "candidates": body.candidates,
                                  "ppq": prompt.clip.ppq if prompt is not None else 480,
                                  "meter_note": meter_note}) + "\n"
                ended = False
                while not ended:
                    batch = [await events.get()]
                    while not events.empty():
                        batch.append(events.get_nowait())
                    if batch[-1] is END_OF_STREAM:
                        batch.pop()
                        ended = True
                    if batch:
                        yield "".join(json.dumps(e, allow_nan=False) + "\n" for e in batch)
            finally:
                run.cancelled.set()  # no effect once done; stops the work if the client left

        return event_stream_response(lines(), on_disconnect=run.cancelled.set)

    return router


def _prepare_prompt(state: HostState, body: GenerateRequest) -> tuple[ModelClip, str | None]:
    """The prompt clip in the meter the model reads (re-barred here, once for the request: a client's bars
    are never trusted), with at_tick / infill checked against it, and what the reading changed. Runs in a
    worker thread: MIDI parsing and bar arithmetic on a hostile file must never stall the event loop."""
    ignored: list[str] = []
    clip = decode_midi(body.prompt_midi, "prompt_midi", notes=ignored)[1]
    try:
        # Bars (infill spans, candidates) are those the model reads; meter_note says what changed,
        # including the meters the import itself ignored (e.g. a 1/8 bar shorter than one tick).
        prompt = state.policy.tokenizer.model_meter(clip)
        _check_positions(body, prompt.clip)
    except (ValueError, OverflowError, MemoryError, RecursionError) as exc:
        log.warning("prompt_midi could not be used: %r", exc)
        raise BadRequest(f"prompt_midi cannot be used: {first_line(exc)}") from None
    return prompt, "; ".join([*ignored, *([prompt.note] if prompt.note else [])]) or None


def _check_positions(body, clip: Clip) -> None:
    """at_tick / infill must lie within the clip plus room for the new bars (bounded prompt sizes)."""

    limit_bar = clip.num_bars + MAX_BARS
    if body.at_tick is not None and body.at_tick > clip.bar_tick(limit_bar):
        raise BadRequest(f"at_tick {body.at_tick} is more than {MAX_BARS} bars past the end of the prompt", 422)
    if body.infill is not None and body.infill.start_bar > limit_bar:
        raise BadRequest(f"infill.start_bar {body.infill.start_bar} is more than {MAX_BARS} bars past the end "
                         "of the prompt", 422)


def score_router():
    router = APIRouter(tags=["score"])

    @router.post("/v1/score")
    async def score(body: ScoreRequest, request: Request) -> dict:
        """MAA CE/CU/PC/PQ of a MIDI file (rendered through the SoundFont) or of audio."""
        state: HostState = request.app.state.host
        if state.scorer is None:
            raise HTTPException(status_code=503, detail=f"MAA unavailable: {state.maa_status()['reason']}")

        def work() -> dict:
            from engine.render import (
                AudioFileError,
                RenderError,
                SoundFontError,
                load_wav,
                render,
            )
            from engine.scorer import MAAInputError

            seconds = None
            try:
                if body.midi is not None:
                    clip = decode_midi(body.midi, "midi")[1]
                    if not clip.notes:
                        raise BadRequest("midi has no notes to score")
                    audio = render(clip, sample_rate=SCORE_SAMPLE_RATE, max_seconds=MAX_SCORE_SECONDS,
                                   soundfont=state.soundfont)
                    sr = SCORE_SAMPLE_RATE
                else:
                    data = b64decode(body.wav, "wav")
                    with tempfile.TemporaryDirectory(prefix="smart-score-") as d:
                        path = Path(d) / "upload.audio"
                        path.write_bytes(data)
                        audio, sr = load_wav(path)
                    if audio.size == 0:
                        raise BadRequest("wav has no samples")
                    audio = audio[: int(MAX_SCORE_SECONDS * sr)]
                seconds = round(len(audio) / sr, 3)
                with state.scorer_lock:
                    result = json_safe(state.scorer.score([audio], sr)[0].as_dict())
            except (AudioFileError, RenderError, MAAInputError) as exc:
                raise BadRequest(first_line(exc)) from None
            except SoundFontError as exc:
                raise BadRequest(f"renderer unavailable: {first_line(exc)}", status=503) from None
            return {**result, "random_weights": bool(getattr(state.scorer, "is_random", False)),
                    "maa": getattr(state.scorer, "source", None), "seconds": seconds}

        try:
            return await run_in_threadpool(work)
        except UserError as exc:  # BadRequest, or a request file that does not decode
            raise HTTPException(status_code=getattr(exc, "status", 400), detail=str(exc)) from None

    return router


# ============================================================================ app factory
def create_app(policy: Policy, *, scorer=None, maa_reason: str | None = None, token: str | None = None,
               model_roots: Sequence[str | os.PathLike] = (), max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_batch_rows: int = 32, max_active: int = 64, soundfont: str | None = None,
               routers: Sequence = (), decode_weights: str = "model", hosts: HostRules | None = None,
               allowed_origins: Sequence[str] = (), allowed_dirs: Sequence[str | os.PathLike] | None = None):
    """The host's FastAPI app. `scorer`: an MAAScorer or None (then `maa_reason` says why).

    `routers`: extra APIRouters (e.g. training jobs); they reach the state as `request.app.state.host`.
    `hosts`: the Host names it answers to (default: loopback names only); `allowed_origins`: web origins
    whose pages may call it; `allowed_dirs`: folders clients may name models and data in (None: any).
    """
    from contextlib import asynccontextmanager

    state = HostState(policy, scorer=scorer, maa_reason=maa_reason, token=token, model_roots=model_roots,
                      max_body_bytes=max_body_bytes, max_batch_rows=max_batch_rows, max_active=max_active,
                      soundfont=soundfont, decode_weights=decode_weights, allowed_dirs=allowed_dirs)

    @asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    app = FastAPI(title="SMART Studio policy host", version="1", lifespan=lifespan,
                  description="Generation, rendering and MAA scoring for SMART Studio. "
                              "Send `Authorization: Bearer TOKEN` when the host has a token.",
                  # Declares the bearer scheme for /docs (Authorize button); the check is BearerAuthMiddleware.
                  dependencies=[Depends(HTTPBearer(auto_error=False))])
    app.state.host = state

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            problems.append(f"{where}: {msg}" if where else msg)
        return JSONResponse({"detail": "; ".join(problems) or "invalid request",
                             "errors": [{"loc": list(map(str, e.get("loc", ()))), "msg": str(e.get("msg"))}
                                        for e in exc.errors()]}, status_code=422)

    @app.exception_handler(RecursionError)
    async def nested_too_deeply(request: Request, exc: RecursionError):
        # A body nested thousands deep makes the JSON parser (or pydantic) recurse: the request is bad.
        return JSONResponse({"detail": "the request body is nested too deeply"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {first_line(exc)}"}, status_code=500)

    for router in (health_router(), models_router(), generate_router(), score_router(), *routers):
        app.include_router(router)
    # Added innermost first. A request meets: the browser guard (Host, Origin), auth, the JSON-only
    # rule, then the body bound — all before the body is read.
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(BearerAuthMiddleware, token=state.token)
    app.add_middleware(BrowserGuardMiddleware, hosts=hosts, allowed_origins=allowed_origins)
    return app


