"""Live play against a DAW over JACK's dummy driver (no sound card): clock, onsets, jam readiness.

1. Tempo error one beat (24 ticks) after Start, at 60/120/200 bpm: over JACK (ticks at exact frames)
   and with ±1 ms of arrival jitter per tick (a USB MIDI interface; simulated on timestamps).
2. Onset error of sent notes against their grid time (the DAW's own tick frames), p50/p99/max, over
   `--minutes` of eighth notes at 120 bpm following the DAW's clock: JACK back end (frame offsets) and
   the rtmidi back end (a sender thread) through JACK's MIDI.
3. Jam at 90/120/160 bpm with 2- and 4-bar phrases (listen = answer), the shipped model: share of answers
   ready before their bar line and `ready_ms_before`.
4. (part `jam-host`) The same jam the studio runs: the model in a local host (`smart serve` subprocess on
   127.0.0.1, CPU) asked over HTTP by `studio.live.hostgen.host_generator`, one request per answer.

    uv run python benchmarks/bench_live.py [--minutes 2] [--answers 3] [--model DIR] [--smoke]
                                           [--parts tempo,onsets,jam,jam-host]

The load seen before and after is printed; run it on a quiet machine (or say what ran beside it).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The private JACK server and test DAW are test support (tests/jack_support.py), not part of the product.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from jack_support import JackTestDaw, jack_server  # noqa: E402
from engine.live.clock import CLOCK, START, STOP, ClockFollower  # noqa: E402
from engine.live.scheduler import JackLiveIO, RtmidiLiveIO  # noqa: E402


def tick_frames(start: int, rate: int, bpm: float, count: int) -> list[int]:
    spt = rate * 60.0 / (bpm * 24)
    return [round(start + k * spt) for k in range(count)]


def wait_frames(daw: JackTestDaw, frame: int) -> None:
    while daw.client.frame_time < frame:
        time.sleep(0.01)


def connect(daw: JackTestDaw, backend: str, **kw):
    if backend == "jack":
        io = JackLiveIO(client_name="bench-live", input_port="daw:out", output_port="daw-monitor:in", **kw)
    else:
        io = RtmidiLiveIO(api="jack", client_name="bench-live", **kw)
        ins = [p for p in daw.client.get_ports(is_midi=True, is_input=True) if "bench-live" in p.name]
        outs = [p for p in daw.client.get_ports(is_midi=True, is_output=True) if "bench-live" in p.name]
        daw.client.connect("daw:out", ins[0])
        daw.client.connect(outs[0], "daw-monitor:in")
    time.sleep(0.3)  # JACK connects in a later cycle
    return io


def tempo_after_one_beat(daw: JackTestDaw, bpm: float) -> float:
    io = connect(daw, "jack", clock="follow")
    try:
        start = daw.client.frame_time + daw.rate // 4
        frames = tick_frames(start, daw.rate, bpm, 25)
        daw.play([(start - 5, bytes((START,)))] + [(f, bytes((CLOCK,))) for f in frames])
        wait_frames(daw, frames[-1] + daw.rate // 20)
        return abs(io.follower.bpm - bpm)
    finally:
        daw.play([(daw.client.frame_time, bytes((STOP,)))])
        time.sleep(0.05)
        io.close()


def tempo_with_jitter(bpm: float, jitter_s: float = 0.001, seed: int = 0) -> float:
    rng = random.Random(seed)
    f = ClockFollower()
    f.on_message(bytes((START,)), 0.0)
    spt = 60.0 / (bpm * 24)
    for k in range(25):
        f.on_message(bytes((CLOCK,)), k * spt + rng.uniform(-jitter_s, jitter_s))
    return abs(f.bpm - bpm)


def onset_errors(daw: JackTestDaw, backend: str, seconds: float, bpm: float = 120.0) -> list[float]:
    io = connect(daw, backend, clock="follow")
    try:
        rate = daw.rate
        start = daw.client.frame_time + rate // 2
        beats = int(seconds * bpm / 60)
        frames = tick_frames(start, rate, bpm, 24 * (beats + 2))
        daw.play([(start - 5, bytes((START,)))] + [(f, bytes((CLOCK,))) for f in frames])
        while not io.follower.running:
            time.sleep(0.005)
        eighths = list(range(2, 2 * beats))  # from beat 1: the first beat measures the tempo
        for k in eighths:
            io.schedule_note(k / 2, 60 + k % 12, 90, 0.25)
        wait_frames(daw, frames[24 * beats] + rate // 10)
        ons = [f for f, m in daw.received if m[0] & 0xF0 == 0x90 and m[2] > 0]
        daw.received.clear()
        return [abs(f - frames[12 * k]) / rate * 1000 for f, k in zip(ons, eighths)]
    finally:
        daw.play([(daw.client.frame_time, bytes((STOP,)))])
        time.sleep(0.05)
        io.close()


def jam_readiness(daw: JackTestDaw, generate, bpm: float, bars: int, answers: int) -> list[float]:
    from engine.live.jam import Jam, JamOptions

    io = connect(daw, "jack", clock="follow")
    try:
        rate = daw.rate
        jam = Jam(io, generate, JamOptions(bars, bars, max_answers=answers))
        jam.warm_up()
        start = daw.client.frame_time + rate // 2
        total_beats = answers * 2 * bars * 4 + 4
        frames = tick_frames(start, rate, bpm, 24 * total_beats)
        musician = []
        for phrase in range(answers):  # a C major arpeggio in eighths through each listening phrase
            first = phrase * 2 * bars * 4
            for k in range(bars * 8):
                f_on, f_off = frames[24 * first + 12 * k], frames[24 * first + 12 * k + 10]
                pitch = (60, 64, 67, 72)[k % 4]
                musician += [(f_on, bytes((0x90, pitch, 80))), (f_off, bytes((0x80, pitch, 0)))]
        worker = threading.Thread(target=jam.run)
        worker.start()
        daw.play([(start - 5, bytes((START,)))] + [(f, bytes((CLOCK,))) for f in frames] + musician)
        worker.join()
        return [a.ready_ms_before for a in jam.answers]
    finally:
        daw.play([(daw.client.frame_time, bytes((STOP,)))])
        time.sleep(0.05)
        io.close()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def report_tempo(daw: JackTestDaw) -> None:
    print("\n## Tempo error one beat after Start (bpm)")
    print("| bpm | over JACK | ±1 ms jitter per tick |\n| --- | --- | --- |")
    for bpm in (60, 120, 200):
        print(f"| {bpm} | {tempo_after_one_beat(daw, bpm):.4f} | {tempo_with_jitter(bpm):.3f} |", flush=True)


def report_onsets(daw: JackTestDaw, minutes: float) -> None:
    print(f"\n## Onset error against the grid ({minutes:g} min of eighths at 120 bpm, following)")
    print("| back end | notes | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- |")
    for backend in ("jack", "rtmidi"):
        errs = onset_errors(daw, backend, minutes * 60)
        print(f"| {backend} | {len(errs)} | {pct(errs, 0.5):.3f} | {pct(errs, 0.99):.3f} | {max(errs):.3f} |",
              flush=True)


def jam_table(daw: JackTestDaw, generator_for_bars, answers: int) -> None:
    print("| bpm | phrase bars | answers | ready before the bar line | ready_ms_before min / median |")
    print("| --- | --- | --- | --- | --- |")
    for bpm in (90, 120, 160):
        for bars in (2, 4):
            ready = jam_readiness(daw, generator_for_bars(bars), bpm, bars, answers)
            ok = sum(r > 0 for r in ready)
            print(f"| {bpm} | {bars} | {len(ready)} | {ok}/{len(ready)} | "
                  f"{min(ready):.0f} / {statistics.median(ready):.0f} |", flush=True)


def report_jam(daw: JackTestDaw, model: str | None, answers: int, smoke: bool) -> None:
    import torch

    from engine.api import GenerationSettings
    from engine.live.jam import policy_generator
    from engine.policy import Policy

    print("\n## Jam: answers ready before their bar line")
    policy = Policy.create("tiny", seed=0) if smoke else Policy.load(model)
    print(f"model: {'tiny random (smoke)' if smoke else (model or 'shipped')}, torch threads {torch.get_num_threads()}")
    jam_table(daw, lambda bars: policy_generator(policy, GenerationSettings(candidates=1, bars=bars,
                                                                            max_new_tokens=256 * bars, seed=0)),
              answers)


def report_jam_host(daw: JackTestDaw, model: str | None, answers: int, smoke: bool) -> None:
    """The studio's jam: the policy in a local host process, asked over HTTP (no torch in this process)."""
    import tempfile

    from engine.host_client import LocalHost
    from studio.live.hostgen import JamSampling, host_generator

    print("\n## Jam through the host (the studio's path: HTTP to a local `smart serve`)")
    with tempfile.TemporaryDirectory() as tmp:
        if smoke:
            from engine.policy import Policy

            model = os.path.join(tmp, "tiny")
            Policy.create("tiny", seed=0).save(model)
        with LocalHost(model, device="cpu", extra_args=["--threads", "1"] if not smoke else []) as host:
            client = host.client()
            print(f"model: {'tiny random (smoke)' if smoke else (model or 'shipped')} in the host "
                  f"({client.health().get('device')}, {client.health().get('decode_weights')} weights)")
            errors: list[str] = []
            jam_table(daw, lambda bars: host_generator(lambda: client, lambda: JamSampling(seed=0),
                                                       on_error=errors.append), answers)
            if errors:
                print(f"host errors: {len(errors)} (first: {errors[0]})")
            client.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=2.0, help="length of each onset run")
    p.add_argument("--answers", type=int, default=3, help="answers per jam configuration")
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    p.add_argument("--smoke", action="store_true", help="a few seconds of each part, tiny random model")
    p.add_argument("--synchronous", action="store_true", help="jackd -S: each cycle waits for every client")
    p.add_argument("--parts", default="tempo,onsets,jam", help="which parts to run (comma-separated)")
    args = p.parse_args(argv)
    if args.smoke:
        args.minutes, args.answers = 0.1, 1
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average)", flush=True)
    parts = set(args.parts.split(","))
    with jack_server(portaudio=False, synchronous=args.synchronous) as server:
        print(f"JACK dummy driver: {server.sample_rate} Hz, period {server.period} frames "
              f"({server.period / server.sample_rate * 1000:.1f} ms), "
              f"{'synchronous (-S)' if args.synchronous else 'asynchronous mode (jackd2 default)'}")
        daw = JackTestDaw()
        try:
            if "tempo" in parts:
                report_tempo(daw)
            if "onsets" in parts:
                report_onsets(daw, args.minutes)
            if "jam" in parts:
                report_jam(daw, args.model, args.answers, args.smoke)
            if "jam-host" in parts:
                report_jam_host(daw, args.model, args.answers, args.smoke)
        finally:
            daw.close()
    print(f"\nload after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
