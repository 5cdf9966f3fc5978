"""`smart serve`: bind rules, device and decoding-weight choice, and the uvicorn server."""


from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from engine.api import DEFAULT_PORT, TOKEN_ENV_VAR
from engine.cliutil import HelpFormatter, examples
from engine.errors import UserError
from engine.host.middleware import HostRules
from engine.music import atomic_write_text

log = logging.getLogger("smart.host")

# ============================================================================ smart serve
def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def pick_device(requested: str | None) -> str:
    import torch

    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available to this process")
    return requested


DECODE_WEIGHTS_ENV_VAR = "SMART_DECODE_WEIGHTS"
DECODE_WEIGHT_CHOICES = ("auto", "model", "int8", "fp16")


def pick_decode_weights(requested: str, device: str) -> str:
    """--decode-weights: "auto" is int8 on CPU when torch has the kernels (faster decoding at about
    +0.001 nats/token, see BENCHMARKS.md), exact weights otherwise."""
    from engine.fastdecode import int8_weights_available

    if requested not in DECODE_WEIGHT_CHOICES:
        raise UserError(f"--decode-weights / ${DECODE_WEIGHTS_ENV_VAR}: {requested!r} is not one of "
                        f"{', '.join(DECODE_WEIGHT_CHOICES)}")
    if requested != "auto":
        if requested != "model" and device != "cpu":
            raise UserError(f"--decode-weights {requested} is a CPU mode; use model (exact) on {device}")
        return requested
    return "int8" if device == "cpu" and int8_weights_available() else "model"


def cpu_threads(requested: int | None, device: str) -> int | None:
    """Torch intra-op threads for the host (None: leave torch's default, as on CUDA).

    Decoding runs many small ops; spreading each over all cores mostly buys spin-waiting, and on a
    busy machine far worse: on 2 loaded cores 1 thread decoded 35-row steps in 5.5 ms against 97 ms
    with 2 (benchmarks/bench_host_load.py). So by default a quarter of the cores, 1 to 4.
    """
    if requested is not None:
        if requested < 1:
            raise UserError(f"invalid --threads {requested}")
        return requested
    if device != "cpu":
        return None
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def bind_socket(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve --host {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


def browser_rules(args) -> tuple[HostRules, list[str] | None]:
    """(Host names the host answers to, folders clients may name models/data in; None: any).

    A loopback host answers to its loopback names only (DNS rebinding) and lets its own user name any
    folder. A host serving a network also answers to its machine's names, the address it is bound to
    and any IP address, and lets clients use only its listed models and the --allow-dir folders."""
    names = list(args.allowed_host)
    if is_loopback(args.host):
        return HostRules(names), (list(args.allow_dir) or None)
    names += [args.host, socket.gethostname(), socket.getfqdn()]
    return HostRules(names, ip_literals=True), list(args.allow_dir)


def say(stage: str) -> None:
    """A start-up stage on stderr, whatever --log-level: a waiting studio shows the latest line."""
    print(f"smart serve: {stage}", file=sys.stderr, flush=True)


# Exit status of a host whose parent (the studio that started it) is gone.
PARENT_GONE_STATUS = 75
PARENT_POLL_S = 1.0
PARENT_GONE_GRACE_S = 15.0  # a graceful shutdown (its job process stopped) gets this long


def watch_parent(parent_pid: int, poll_s: float = PARENT_POLL_S, grace_s: float = PARENT_GONE_GRACE_S) -> None:
    """End this host when the process that started it is gone, however it ended (a crash, kill -9): as a
    host job does (`smart host-job --parent-pid`). The host is asked to stop as on Ctrl-C (SIGTERM: its
    running job is stopped and resumed by the next host); if it has not stopped after `grace_s`, it exits."""
    import signal
    import threading

    direct = os.getppid() == parent_pid  # else a wrapper (a shell, `uv run`) stands between us

    def gone() -> bool:
        if direct:
            return os.getppid() != parent_pid  # reparented: immune to the pid being reused
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def loop() -> None:
        while not gone():
            time.sleep(poll_s)
        print(f"smart serve: the process that started this host ({parent_pid}) is gone: stopping",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(PARENT_GONE_STATUS)

    if gone():  # already orphaned before the watch began
        print(f"smart serve: the process that started this host ({parent_pid}) is gone", file=sys.stderr, flush=True)
        os._exit(PARENT_GONE_STATUS)
    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def run(args) -> int:
    if args.parent_pid is not None:
        if args.parent_pid <= 0:
            raise UserError(f"invalid --parent-pid {args.parent_pid}")
        watch_parent(args.parent_pid)  # first: a host orphaned while it loads its model ends too
    token = args.token or os.environ.get(TOKEN_ENV_VAR) or None
    if not is_loopback(args.host) and not token:
        raise UserError(f"refusing to listen on {args.host} without a token: anyone who can reach it could use "
                        f"the GPU. Pass --token T or set {TOKEN_ENV_VAR} (or bind to 127.0.0.1)")
    if not 0 <= args.port <= 65535:
        raise UserError(f"invalid --port {args.port}")
    if token is not None and len(token) < 8:
        raise UserError("the token must be at least 8 characters")
    if args.soundfont is not None and not Path(args.soundfont).is_file():
        raise UserError(f"--soundfont {args.soundfont}: no such file")
    # The model stack loads only now: `smart --help` and argument errors never wait for torch.
    import torch

    from engine.host.server import create_app
    from engine.policy import DEFAULT_MODEL_DIR, Policy, PolicyLoadError

    device = pick_device(args.device)
    threads = cpu_threads(args.threads, device)
    if threads is not None:
        torch.set_num_threads(threads)
    decode_weights = pick_decode_weights(args.decode_weights, device)

    import uvicorn

    say(f"loading model {args.model or DEFAULT_MODEL_DIR} on {device} …")
    try:
        policy = Policy.load(args.model, device=device)
    except PolicyLoadError as exc:
        hint = "" if args.model else " (train one with `smart pretrain` or pass --model DIR)"
        raise UserError(f"{exc}{hint}") from None
    scorer, maa_reason = None, None
    say("loading MAA weights …")
    try:
        from engine.scorer import MAAScorer, MAAUnavailable

        try:
            scorer = MAAScorer.load(args.maa, device=device, allow_download=False, exact=args.maa_exact or None)
        except MAAUnavailable as exc:
            maa_reason = str(exc)
    except ImportError as exc:
        maa_reason = f"the MAA scorer cannot be imported: {exc}"
    if maa_reason:
        say(f"no MAA scores: {maa_reason}")
    from engine.host.jobs import (  # training jobs (POST /v1/train, /v1/jobs)
        JobManager,
        jobs_router,
    )

    jobs = JobManager(args.jobs_dir, resume_interrupted=args.interrupted_jobs == "resume")
    hosts, allowed_dirs = browser_rules(args)
    if decode_weights != "model":
        say(f"packing {decode_weights} weights for fast CPU decoding …")
    app = create_app(policy, scorer=scorer, maa_reason=maa_reason, token=token,
                     model_roots=[DEFAULT_MODEL_DIR.parent, *args.checkpoints],
                     max_batch_rows=args.max_batch_rows, soundfont=args.soundfont, routers=[jobs_router(jobs)],
                     decode_weights=decode_weights, hosts=hosts, allowed_origins=args.allowed_origin,
                     allowed_dirs=allowed_dirs)
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"smart serve: listening on http://{url_host}:{port} (docs at /docs) — model {policy.path}, device {device}, "
          f"MAA {scorer.precision if scorer is not None else 'missing: ' + (maa_reason or '')}, "
          f"auth {'on' if token else 'off'}, {torch.get_num_threads()} CPU threads, decode weights {decode_weights}", file=sys.stderr, flush=True)
    if args.ready_file:
        # Written once bound, atomically (the parent polls for it): a parent that asked for --port 0 learns the port.
        atomic_write_text(args.ready_file, json.dumps({"port": port, "pid": os.getpid()}))
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log, lifespan="on",
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the policy host (HTTP API for the studio; OpenAPI at /docs)",
                       description="Serve the policy (generation, MAA scoring, training jobs) over HTTP for the "
                                   "studio and other clients; the API is described at /docs.",
                       formatter_class=HelpFormatter,
                       epilog=examples("smart serve --port 8765 --model runs/mine/final",
                                       "smart serve --host 0.0.0.0 --token \"$SMART_HOST_TOKEN\" --device cuda"))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (non-loopback needs a token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="TCP port to listen on; 0 picks a free port (see --ready-file)")
    p.add_argument("--token", default=None, help=f"bearer token clients must send (default: ${TOKEN_ENV_VAR})")
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    p.add_argument("--maa", default=None, help="MAA checkpoint.pt or HF directory (default: $SMART_MAA_CHECKPOINT "
                                               "or the HF cache); without one, scores are null")
    p.add_argument("--maa-exact", action="store_true",
                   help="score with the exact float32 MAA model on CPU (default: the faster int8/bf16 path; "
                        "also $SMART_MAA_EXACT=1)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the model runs; auto = cuda when a GPU is available, else cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default on CPU: a quarter of the cores, 1 to 4)")
    p.add_argument("--decode-weights", default=os.environ.get(DECODE_WEIGHTS_ENV_VAR, "auto"),
                   choices=DECODE_WEIGHT_CHOICES,
                   help="weights for decoding: model = exact; int8/fp16 = packed CPU snapshots (faster, "
                        f"approximate); auto = int8 on CPU, exact on CUDA (default: ${DECODE_WEIGHTS_ENV_VAR} or auto)")
    p.add_argument("--checkpoints", action="append", default=[], metavar="DIR",
                   help="also list model directories found under DIR in /v1/models (repeatable)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (repeatable; '*' = any). A loopback host "
                        "answers to localhost/127.0.0.1/::1 only, which stops DNS-rebinding web pages")
    p.add_argument("--allowed-origin", action="append", default=[], metavar="URL",
                   help="let web pages from this origin (e.g. https://tools.example) call the host (repeatable); "
                        "other cross-origin requests get 403")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="folders whose models and prepared data clients may name in /v1/models/activate and "
                        "/v1/train (repeatable). Default: any folder on a loopback host; only the listed models "
                        "on a host that serves a network")
    p.add_argument("--soundfont", default=None, help="SoundFont for rendering (default: the shipped piano)")
    p.add_argument("--max-batch-rows", type=int, default=64, help="rows (candidates) decoded together at most (at least 16, the most one request asks for)")
    p.add_argument("--interrupted-jobs", choices=["resume", "pause"], default="resume",
                   help="a job that was running when the host last stopped: resume it at start, or pause it "
                        "until a client resumes it (the studio's own host pauses)")
    p.add_argument("--jobs-dir", default=None, help="training jobs directory (default: $SMART_JOBS_DIR or "
                                                    "~/.local/share/smart-studio/jobs)")
    p.add_argument("--ready-file", default=None, help="write {\"port\", \"pid\"} here once listening")
    p.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                   help="stop when the process PID that started this host is gone (the studio passes its own, so "
                        "its host never outlives it)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="least severe server log messages printed on stderr (start-up stages are always printed)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=run)
