"""`smart live`: jam with the model over MIDI — it listens L bars, answers A bars, in time with the clock.

One JSON line per answer on stdout:
    {"answer": k, "start_beat": b, "bars": A, "notes": [[beat, pitch, velocity, duration_beats], ...],
     "ready_ms_before": x, "generation_ms": g}
beats are quarter notes from Start (beat 0 = the first clock tick after Start); `ready_ms_before` is
how long before its first bar line the answer was scheduled (negative: late).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from engine.api import parse_temperature_factors
from engine.cliutil import HelpFormatter, examples, option_type
from engine.errors import UserError

MIDI_APIS = ("jack", "alsa", "coremidi", "winmm")
# Token budget per answered bar: a dense pop bar is ~70 tokens; a run-away sample stops here, late
# answers being worse than short ones.
TOKENS_PER_BAR = 256


def parse_meter(text: str) -> tuple[int, int]:
    try:
        n, d = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"meter must look like 4/4, not {text!r}") from None
    return n, d


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "live", help="jam over MIDI: the model answers what you play, on the bar line, in time with the clock",
        description="Call and response with the model over live MIDI. Without --input/--output it opens "
                    "ports named 'SMART Studio'; connect your keyboard (or DAW track) to its input and its "
                    "output to a synth or DAW track. With --clock follow (default) it follows the MIDI clock "
                    "the DAW sends to its input; with --clock internal it leads, sending clock, Start and "
                    "Song Position Pointer on its output.",
        formatter_class=HelpFormatter,
        epilog=examples("smart live --listen-bars 2 --answer-bars 2",
                        "smart live --clock internal --bpm 100 --output 'Surge XT:midi_in'"))
    p.add_argument("--model", metavar="DIR", help="model directory (default: the shipped model)")
    p.add_argument("--midi-api", choices=MIDI_APIS, help="MIDI system (default: JACK when a server runs, else "
                   "the platform's)")
    p.add_argument("--input", metavar="PORT", help="connect this port to the jam's input (default: a virtual port)")
    p.add_argument("--output", metavar="PORT", help="connect the jam's output to this port (default: a virtual port)")
    p.add_argument("--clock", choices=["follow", "internal"], default="follow",
                   help="follow the DAW's MIDI clock, or lead with an internal one")
    p.add_argument("--bpm", type=float, default=120.0, help="tempo of the internal clock")
    p.add_argument("--meter", type=parse_meter, default=(4, 4), metavar="N/D", help="time signature")
    p.add_argument("--listen-bars", type=int, default=2, help="bars the musician plays before each answer")
    p.add_argument("--answer-bars", type=int, default=2, help="bars of each answer")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling, in (0, 1]")
    p.add_argument("--temperature-factors", type=option_type(parse_temperature_factors), default=None, metavar="FAMILY=F,...",
                   help="per token family temperature factors ('none': none; default: the shipped)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the answers (default: a new one each run)")
    p.add_argument("--max-answers", type=int, default=None, help="stop after this many answers (default: play "
                   "until SIGINT / SIGTERM)")
    p.add_argument("--ready-file", metavar="PATH", help='write {"input": PORT, "output": PORT} here once the '
                   "ports are open (default: none)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.set_defaults(func=run)


def _settings(args):
    from engine.api import GenerationSettings

    extra = {} if args.temperature_factors is None else {"temperature_factors": args.temperature_factors}
    settings = GenerationSettings(candidates=1, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                                  bars=args.answer_bars,
                                  max_new_tokens=min(4096, TOKENS_PER_BAR * args.answer_bars), **extra)
    try:
        settings.validate()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return settings


def run(args) -> int:
    from engine.live.jam import Jam, JamOptions, policy_generator
    from engine.live.scheduler import LiveUnavailable, open_live_io

    if not 1.0 <= args.bpm <= 999.0:
        raise UserError("--bpm must be between 1 and 999")
    if args.max_answers is not None and args.max_answers < 1:
        raise UserError("--max-answers must be at least 1")
    try:
        options = JamOptions(args.listen_bars, args.answer_bars, args.meter, max_answers=args.max_answers,
                             context_bars=max(8, args.listen_bars + args.answer_bars))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    settings = _settings(args)  # arguments are checked before the model loads

    import torch

    from engine.policy import Policy, PolicyLoadError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        policy = Policy.load(args.model)
    except PolicyLoadError as exc:
        raise UserError(str(exc)) from None
    try:
        io = open_live_io(args.midi_api, input_port=args.input, output_port=args.output, clock=args.clock,
                          bpm=args.bpm)
    except LiveUnavailable as exc:
        raise UserError(str(exc)) from None
    jam = Jam(io, policy_generator(policy, settings), options,
              on_answer=lambda a: print(json.dumps(a.as_json()), flush=True), bpm_fallback=args.bpm)
    previous = {s: signal.signal(s, lambda *_: jam.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        jam.warm_up()
        if args.ready_file:
            from engine.music import atomic_write_text

            atomic_write_text(args.ready_file, json.dumps({"input": io.input_name, "output": io.output_name}))
        print(f"smart live: listening on {io.input_name}, playing on {io.output_name}; "
              f"{'waiting for the DAW to Start' if args.clock == 'follow' else f'internal clock at {args.bpm:g} bpm'}",
              file=sys.stderr, flush=True)
        if args.clock == "internal":
            io.start_internal(io.now() + 0.5)
        worker = threading.Thread(target=jam.run, name="jam", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.1)  # the main thread stays free for SIGINT / SIGTERM
    finally:
        io.all_notes_off()
        if args.clock == "internal":
            io.stop_internal()
        time.sleep(0.1)  # a few cycles: the note-offs and Stop leave before the ports close
        io.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
