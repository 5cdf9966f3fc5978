"""Engine subcommands of `smart`: render, features, score, generate."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from engine.api import DEFAULT_TEMPERATURE_FACTORS, GenerationSettings, parse_temperature_factors
from engine.cliutil import HelpFormatter, examples, option_type
from engine.errors import UserError, os_error_line
from engine.music import Clip, MidiFileError, atomic_write_text

AUDIO_SUFFIXES = {".wav", ".wave"}


@contextmanager
def user_errors():
    """Turn the engine's known failure types, and files that cannot be read or written, into
    one-line UserErrors."""
    from engine.maa_weights import MAAUnavailable
    from engine.render import AudioFileError, RenderError, SoundFontError

    known = [MidiFileError, SoundFontError, MAAUnavailable, RenderError, AudioFileError]
    # The model's own error only where the model stack is loaded: importing it (torch) for an except clause
    # would cost `smart render` seconds.
    policy = sys.modules.get("engine.policy")
    if policy is not None:
        known.append(policy.PolicyLoadError)
    try:
        yield
    except tuple(known) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(os_error_line(exc)) from None


def output_file(path: str) -> Path:
    """`path` checked before a long job writes to it: not a folder, its folder creatable."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"{out} is a folder; give a file name")
    with user_errors():
        out.parent.mkdir(parents=True, exist_ok=True)
    return out


# Suffixes of the files a command writes: an --out folder named like one is a slip (`--out song.mid`).
FILE_LIKE_SUFFIXES = {".mid", ".midi", ".wav", ".wave", ".flac", ".ogg", ".mp3", ".json", ".jsonl"}


def check_output_folder(path: str) -> None:
    """Refuse an --out that cannot be the folder a command writes into, before any slow work."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; --out takes a folder")
    if not out.exists() and out.suffix.lower() in FILE_LIKE_SUFFIXES:
        raise UserError(f"--out takes a folder (the candidates are written into it as candidate_01.mid, …); "
                        f"{out} looks like a file name")


def output_folder(path: str) -> Path:
    """`path` as a folder to write into, created if missing; not an existing file."""
    check_output_folder(path)
    out = Path(path)
    with user_errors():
        out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"{out}: Permission denied")
    return out


def load_clip(path: str, mode: str = "user") -> Clip:
    try:
        clip, _report = Clip.from_midi(path, mode=mode)
    except MidiFileError as exc:
        raise UserError(f"{path}: {exc}") from None
    return clip


# ---------------------------------------------------------------------------- render
def run_render(args) -> int:
    from engine.render import check_audio_suffix, render, save_audio

    if args.sample_rate <= 0 or args.sample_rate > 192000:
        raise UserError(f"invalid sample rate {args.sample_rate}")
    if args.seconds is not None and not 0 < args.seconds <= 3600:
        raise UserError(f"invalid --seconds {args.seconds} (0 < S ≤ 3600)")
    if Path(args.output).is_dir():
        raise UserError(f"{args.output} is a folder; give a file name")
    with user_errors():
        check_audio_suffix(args.output)
    clip = load_clip(args.input)
    output_file(args.output)
    with user_errors():
        audio = render(clip, sample_rate=args.sample_rate, seconds=args.seconds, soundfont=args.soundfont)
        save_audio(args.output, audio, args.sample_rate)
    print(json.dumps({"file": str(args.output), "seconds": round(len(audio) / args.sample_rate, 3),
                      "sample_rate": args.sample_rate}))
    return 0


# ---------------------------------------------------------------------------- features
def run_features(args) -> int:
    from engine.features import midi_features

    failed = 0
    for path in args.files:
        try:
            clip, _ = Clip.from_midi(path, mode="user")
        except MidiFileError as exc:
            print(f"smart features: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps({"file": path, **midi_features(clip, window_seconds=args.seconds)}), flush=True)
    return 2 if failed else 0


# ---------------------------------------------------------------------------- score
def run_score(args) -> int:
    from engine.render import load_wav, render
    from engine.scorer import MAAScorer

    try:
        with user_errors():
            scorer = MAAScorer.load(args.maa, allow_download=args.download, exact=args.exact or None)
    except UserError as exc:
        if args.download or args.maa is not None or "not installed" not in str(exc):
            raise
        # The generic message names `hf download`; this command can fetch the weights itself.
        raise UserError(f"{exc}; or add --download to this command "
                        f"(`smart score {' '.join(args.files[:1])} --download`)") from None
    failed = 0
    for path in args.files:
        try:
            if Path(path).suffix.lower() in AUDIO_SUFFIXES:
                audio, sr = load_wav(path)
            else:
                clip, _ = Clip.from_midi(path, mode="user")
                sr = 16000
                # never padded: MAA would hear the silence as content
                audio = render(clip, sample_rate=sr, max_seconds=args.seconds, soundfont=args.soundfont)
            scores = scorer.score_one(audio, sr)
        except Exception as exc:  # one bad file must not stop the others
            print(f"smart score: {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps({"file": path, **scores.as_dict(), "maa": scorer.source, "maa_precision": scorer.precision}),
              flush=True)
    return 2 if failed else 0


# ---------------------------------------------------------------------------- generate
def run_generate(args) -> int:
    if args.prompt is None and not args.procedural:
        raise UserError("give --prompt FILE.mid or --procedural")
    check_output_folder(args.out)
    if args.prompt_bars is not None and args.prompt_bars < 1:
        raise UserError(f"invalid --prompt-bars {args.prompt_bars} (N ≥ 1)")
    prompt_clip = load_prompt(args.prompt) if args.prompt else None
    settings = GenerationSettings(candidates=args.candidates, temperature=args.temperature, top_p=args.top_p,
                                  seed=args.seed, bars=args.bars, max_new_tokens=args.max_tokens,
                                  grammar=not args.no_grammar,
                                  **({} if args.temperature_factors is None else {"temperature_factors": args.temperature_factors}))
    try:
        settings.validate()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    # The model stack (torch, seconds to import) loads only once the arguments are known to be good.
    from engine.features import midi_features
    from engine.policy import Policy
    from engine.render import render, save_wav

    with user_errors():
        policy = Policy.load(args.model)
    out = output_folder(args.out)  # after the cheap checks (no folder for a refused command), before the long job
    meter_note = None
    if prompt_clip is not None:
        # Bars are counted as the model reads them, from --prompt-bars to the "bars" reported.
        prompt_clip, meter_note = policy.tokenizer.model_meter(prompt_clip)
        if meter_note:
            print(f"smart generate: {args.prompt}: {meter_note}", file=sys.stderr)
        if args.prompt_bars:
            prompt_clip = prompt_clip.last_bars(args.prompt_bars)
    scorer = None
    try:
        from engine.scorer import MAAScorer, MAAUnavailable

        scorer = MAAScorer.load(args.maa)
    except MAAUnavailable as exc:
        print(f"smart generate: no scores: {exc}", file=sys.stderr)

    if prompt_clip is not None:
        candidates = policy.continue_clip(prompt_clip, settings)
        start = prompt_clip.end_tick  # continue_clip's default: where the prompt's last note ends
    else:
        candidates, _ = policy.generate_procedural(settings, first_note=args.first_note)
        start = 0

    score_rate = 16000
    score_audio = []
    rows = []
    for k, cand in enumerate(candidates, start=1):
        full = candidate_file_clip(prompt_clip, cand.clip)
        continuation = full.slice_ticks(start, max(full.end_tick, start) + 1)
        meter = full.time_signature_at(start)
        midi_path = out / f"candidate_{k:02d}.mid"
        full.save_midi(midi_path)
        row = {"file": str(midi_path), "candidate": k, "notes": len(cand.notes), "bars": cand.bars,
               "continuation_start_beat": start / full.ppq,
               "beats_per_bar": meter.numerator * 4 / meter.denominator,
               "time_signature": f"{meter.numerator}/{meter.denominator}", "meter_note": meter_note,
               "tokens": len(cand.token_ids), "finished_by": cand.finished_by,
               "features": midi_features(continuation)}
        if scorer is not None:
            score_audio.append(render(continuation, sample_rate=score_rate))
        if args.wav:
            wav_path = out / f"candidate_{k:02d}.wav"
            save_wav(wav_path, render(full, sample_rate=44100), 44100)
            row["wav"] = str(wav_path)
        rows.append(row)
    if scorer is not None and score_audio:
        for row, s in zip(rows, scorer.score(score_audio, score_rate)):
            row["scores"] = s.as_dict()
            row["scores_random_weights"] = bool(getattr(scorer, "is_random", False))
    for row in rows:
        row.setdefault("scores", None)
        print(json.dumps(row), flush=True)
    atomic_write_text(out / "candidates.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return 0


def load_prompt(path: str) -> Clip:
    """A prompt file with notes to continue; one clear line when it has none (e.g. drums only)."""
    try:
        clip, report = Clip.from_midi(path, mode="user")
    except MidiFileError as exc:
        raise UserError(f"{path}: {exc}") from None
    if not clip.notes:
        drums = any(d.endswith("(drums)") for d in report.tracks_dropped)
        raise UserError(f"{path}: no notes to continue{' (drum tracks are not read)' if drums else ''}; "
                        "use --procedural to generate without a prompt")
    return clip


def candidate_file_clip(prompt: Clip | None, generated: Clip) -> Clip:
    """What a candidate file holds: the prompt's notes and tempo map, the continuation's notes, and the
    bar lines the model wrote them in (the prompt's model meter, plus any meter change it made)."""
    if prompt is None:
        return generated
    return Clip(list(prompt.notes) + list(generated.notes), prompt.ppq, list(prompt.tempos),
                list(generated.time_signatures))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render a MIDI file to audio (WAV, FLAC, OGG, MP3) through the SoundFont",
                       description="Render a MIDI file through a SoundFont piano to a 16-bit WAV, or FLAC, "
                                   "OGG Vorbis or MP3 as the output's suffix says; other suffixes are refused.",
                       formatter_class=HelpFormatter, epilog=examples("smart render sketch.mid sketch.wav --seconds 30"))
    p.add_argument("input", metavar="IN.mid", help="the MIDI file to render")
    p.add_argument("output", metavar="OUT.wav", help="the audio file to write, .wav, .flac, .ogg or .mp3 "
                                                     "(replaced if it exists)")
    p.add_argument("--soundfont", default=None, help="an .sf2/.sf3 file (default: the shipped piano)")
    p.add_argument("--sample-rate", type=int, default=44100, help="samples per second of the WAV, up to 192000")
    p.add_argument("--seconds", type=float, default=None, help="crop to the first S seconds (default: the whole file)")
    p.set_defaults(func=run_render)

    p = sub.add_parser("features", help="the paper's MIDI features as one JSON object per file",
                       description="Print the SMART paper's MIDI features (polyphony, empty beats, pitch range, "
                                   "scale consistency, velocity, histograms) as one JSON line per file.",
                       formatter_class=HelpFormatter,
                       epilog=examples("smart features sketch.mid other.mid --seconds 10"))
    p.add_argument("files", nargs="+", metavar="FILE.mid", help="MIDI files to describe")
    p.add_argument("--seconds", type=float, default=None,
                   help="only notes starting in the first S seconds (default: the whole file)")
    p.set_defaults(func=run_features)

    p = sub.add_parser("score", help="Audiobox Aesthetics CE/CU/PC/PQ of MIDI (rendered) or WAV files",
                       description="Rate MIDI (rendered through the SoundFont) or WAV files with Meta's Audiobox "
                                   "Aesthetics (MAA): content enjoyment (CE), content usefulness (CU), production "
                                   "complexity (PC) and production quality (PQ), one JSON line per file.",
                       formatter_class=HelpFormatter, epilog=examples("smart score sketch.mid take.wav --download"))
    p.add_argument("files", nargs="+", metavar="FILE", help="MIDI (.mid) or audio (.wav) files to rate")
    p.add_argument("--maa", default=None,
                   help="MAA weights: checkpoint.pt or HF directory (default: $SMART_MAA_CHECKPOINT or the HF cache)")
    p.add_argument("--download", action="store_true", help="download the MAA weights from the Hugging Face hub if missing")
    p.add_argument("--soundfont", default=None,
                   help="an .sf2/.sf3 file to render MIDI files with (default: the shipped piano)")
    p.add_argument("--seconds", type=float, default=None,
                   help="score at most the first S seconds of a MIDI file (default: the whole file)")
    p.add_argument("--exact", action="store_true",
                   help="score with the exact float32 model (default on CPU: the faster int8/bf16 path; "
                        "also $SMART_MAA_EXACT=1)")
    p.set_defaults(func=run_score)

    p = sub.add_parser("generate", help="generate candidates with the policy",
                       description="Continue a MIDI file (or start from a procedural prompt) with the policy; write "
                                   "DIR/candidate_NN.mid and DIR/candidates.jsonl, and print one JSON line per "
                                   "candidate with its MIDI features and MAA scores (null without MAA weights).",
                       formatter_class=HelpFormatter,
                       epilog=examples("smart generate --prompt sketch.mid --prompt-bars 8 --bars 4 --out takes/",
                                       "smart generate --procedural --candidates 8 --seed 1 --wav --out ideas/"))
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt", default=None, metavar="FILE.mid", help="continue this MIDI file")
    g.add_argument("--procedural", action="store_true", help="paper §3.5 prompts: Bar + time signature + tempo")
    p.add_argument("--prompt-bars", type=int, default=None,
                   help="use only the last N bars of the prompt (default: the whole prompt)")
    p.add_argument("--first-note", action="store_true", help="procedural prompts also get a first note")
    p.add_argument("--candidates", type=int, default=4, help="how many alternative continuations to sample")
    p.add_argument("--bars", type=int, default=4, help="stop each candidate after this many new bars")
    p.add_argument("--max-tokens", type=int, default=1024,
                   help="…or after this many tokens, whichever comes first")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature, 0 to 5; 0 is greedy (always the most likely token, so every "
                        "candidate of a prompt is the same) (default 1.0)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling, in (0, 1] (default 0.95)")
    p.add_argument("--temperature-factors", type=option_type(parse_temperature_factors), default=None, metavar="FAMILY=F,...",
                   help="per token family (Bar, TimeSig, Position, Tempo, Pitch, Velocity, Duration): sample it at "
                        "temperature × F among its own tokens; 'none': no factors (default: the shipped "
                        f"{','.join(f'{k}={v:g}' for k, v in DEFAULT_TEMPERATURE_FACTORS.items())})")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed: the same seed, prompt and options give the same candidates (default: a fresh one)")
    p.add_argument("--no-grammar", action="store_true", help="sample without grammar masking")
    p.add_argument("--maa", default=None, help="MAA checkpoint.pt or HF directory to score candidates with "
                                              "(default: $SMART_MAA_CHECKPOINT or the HF cache; none: no scores)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the candidates (created if missing)")
    p.add_argument("--wav", action="store_true", help="also write a 44.1 kHz WAV per candidate")
    p.set_defaults(func=run_generate)
