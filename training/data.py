"""`smart prepare-data`: MIDI folders → tokenized train/validation/test splits on disk.

Each file goes through the paper's piano handling (§3.1, `Clip.from_midi(mode="piano")`), loses
its leading empty bars, is tokenized with the engine's REMI tokenizer and filtered like the paper
(> 300 notes in a bar or > 20 % empty bars are dropped). Splits are made by *canonical piece* (a
performance or arrangement of a test piece must never be trained on) from a hash of its id, so they
are deterministic: the piece is the folder holding the file, ASAP's `X_repeat` / `X_no_repeat`
folders are folded into `X`, and pieces whose top voices share most of their interval n-grams (one
song arranged twice, as POP909's 017 and 018) are one canonical piece (`canonical_pieces`).

Layout of DATA_DIR:
    train.bin / val.bin / test.bin   flat uint16 token ids, one sequence after another (no BOS/EOS)
    index.json                       {split: [[offset, length, piece, file], ...]}
    manifest.json                    counts, tokens per split, skipped files and why, config
    remi_tokenizer.json + HF files   the tokenizer (`RemiTokenizer.load(DATA_DIR)`)
    cache/                           one result per source file: a killed run resumes from here

Augmentation (`TokenAugmenter`) works on the ids at training time: transposition shifts Pitch ids,
tempo jitter shifts Tempo ids; both are lookups, no re-tokenization.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import re
from collections import defaultdict
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from engine.cliutil import HelpFormatter, examples
from engine.errors import UserError
from engine.music import PIANO_PITCH_RANGE, Clip, MidiFileError, atomic_write_text

if TYPE_CHECKING:  # miditok (and through it torch) loads where a tokenizer is made: `smart … --help` stays quick
    from engine.tokenizer import RemiTokenizer

MIDI_SUFFIXES = {".mid", ".midi"}
SPLITS = ("train", "val", "test")
MAX_NOTES_PER_BAR = 300  # paper §3.1
MAX_EMPTY_BAR_SHARE = 0.20  # paper §3.1
CACHE_VERSION = 1  # bump when the per-file processing changes, so stale cache entries are ignored
TOKEN_DTYPE = np.uint16


# ---------------------------------------------------------------------------- sources and pieces
@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute path on disk
    name: str  # "<root folder name>/<path inside the root>": portable, shown in reports
    piece: str  # files of one piece share this id (and so a split)


def find_midi_files(roots: Sequence[str | os.PathLike]) -> list[SourceFile]:
    """All .mid/.midi files under the given folders (or given directly), sorted, with piece ids.

    A piece is the folder that holds the file (ASAP: Composer/Work/Piece/ holds the performances
    and midi_score.mid of one piece; POP909: one song per folder). Files lying directly in a
    scanned root are each their own piece — a flat folder of unrelated files is not one piece.
    """
    found: dict[Path, SourceFile] = {}
    for root in roots:
        root = Path(root).expanduser().resolve()
        if not root.exists():
            raise UserError(f"no such folder or file: {root}")
        if root.is_file():
            found[root] = SourceFile(root, root.name, root.stem)
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in MIDI_SUFFIXES or not path.is_file():
                continue
            rel = path.relative_to(root)
            parent = rel.parent
            piece = f"{root.name}/{parent.as_posix()}" if parent != Path(".") else f"{root.name}/{rel.stem}"
            found[path] = SourceFile(path, f"{root.name}/{rel.as_posix()}", piece)
    return sorted(found.values(), key=lambda s: s.name)


def split_of(piece: str, val_frac: float, test_frac: float, seed: int = 0) -> str:
    """Deterministic split of a piece from a hash of its id (uniform in [0, 1))."""
    digest = hashlib.sha256(f"{seed}:{piece}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "val"
    return "train"


# ---------------------------------------------------------------------------- canonical pieces
# ASAP keeps other performances of one piece in sibling folders: "17-1_no_repeat", "24-1_no_2_repeat",
# "1_no_first_repeat", "Toccata_repeat" are the pieces "17-1", "24-1", "1", "Toccata" played with
# (or without) their repeats. Their folder is not a piece of its own.
_REPEAT_VARIANT = re.compile(r"_(?:no_)?(?:[a-z0-9]+_)?repeat$")
MELODY_NGRAM = 8  # top-voice interval n-grams compared between pieces
SAME_MELODY_JACCARD = 0.5  # same song at or above (measured on POP909 + ASAP: 017/018 0.92, next pair 0.02)
COMMON_NGRAM_SHARE = 0.05  # n-grams found in more pieces than this (scales, repeated notes) say nothing


def piece_family(piece: str) -> str:
    """The piece id with ASAP's repeat variants folded into their piece ("…/17-1_no_repeat" → "…/17-1")."""
    head, _, last = piece.rpartition("/")
    last = _REPEAT_VARIANT.sub("", last) or last
    return f"{head}/{last}" if head else last


def melody_ngrams(ids: np.ndarray, tokenizer: RemiTokenizer, n: int = MELODY_NGRAM,
                  pitch_of: np.ndarray | None = None) -> set[int]:
    """Hashes of the top voice's pitch-interval n-grams (transposition-free) of one token sequence.

    The top voice is the highest Pitch at each onset (a Bar or Position token opens an onset), so two
    arrangements of one song — POP909's 017 and 018 share a 224-note melody — share most n-grams.
    `pitch_of` (`pitch_table(tokenizer)`) saves rebuilding the table for every sequence.
    """
    ids = np.asarray(ids, dtype=np.int64)
    pitch_of = pitch_table(tokenizer) if pitch_of is None else pitch_of
    opens = np.isin(ids, tokenizer.kind_ids["Position"]) | (ids == tokenizer.bar_id)
    onset = np.cumsum(opens)
    is_pitch = pitch_of[ids] >= 0
    if is_pitch.sum() < n + 1:
        return set()
    on, pitch = onset[is_pitch], pitch_of[ids[is_pitch]]
    starts = np.flatnonzero(np.r_[True, on[1:] != on[:-1]])
    top = np.maximum.reduceat(pitch, starts)
    steps = np.diff(top)
    if len(steps) < n:
        return set()
    windows = np.lib.stride_tricks.sliding_window_view(steps + 128, n)
    return {hash(w.tobytes()) for w in windows.astype(np.uint8)}


def pitch_table(tokenizer: RemiTokenizer) -> np.ndarray:
    """MIDI pitch of every token id (−1 for tokens that are not a Pitch)."""
    table = np.full(tokenizer.vocab_size, -1, dtype=np.int64)
    for i in tokenizer.kind_ids["Pitch"]:
        table[i] = tokenizer.token_value(int(i))
    return table


def canonical_pieces(melodies: dict[str, set[int]], threshold: float = SAME_MELODY_JACCARD) -> dict[str, str]:
    """piece → canonical piece id: repeat variants folded, pieces sharing a melody grouped.

    `melodies` maps each piece to the union of its files' top-voice n-grams. Two families are one
    canonical piece when the Jaccard similarity of their n-grams is at least `threshold`; groups are
    closed transitively and named by their smallest family id, so the split (a hash of that name)
    is deterministic. Pairs are found through n-grams held by at most `COMMON_NGRAM_SHARE` of the
    families, so a melody copied into more than that share of a collection is not grouped.
    """
    families: dict[str, set[int]] = defaultdict(set)
    for piece, grams in melodies.items():
        families[piece_family(piece)] |= grams
    names = sorted(families)
    parent = {f: f for f in names}

    def root(f: str) -> str:
        while parent[f] != f:
            parent[f] = parent[parent[f]]
            f = parent[f]
        return f

    holders: dict[int, list[int]] = defaultdict(list)
    for k, f in enumerate(names):
        for g in families[f]:
            holders[g].append(k)
    too_common = max(2, int(COMMON_NGRAM_SHARE * len(names)))
    for k, f in enumerate(names):
        # Candidates share a rare n-gram (common ones, such as scales, would pair everything with
        # everything); their similarity is then measured on all n-grams.
        candidates = {j for g in families[f] if len(holders[g]) <= too_common for j in holders[g] if j > k}
        for j in candidates:
            other = names[j]
            both = len(families[f] & families[other])
            union = len(families[f]) + len(families[other]) - both
            if union and both / union >= threshold:
                a, b = root(f), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {piece: root(piece_family(piece)) for piece in melodies}


# ---------------------------------------------------------------------------- one file
@dataclass
class FileResult:
    ids: np.ndarray | None  # uint16 tokens, or None when skipped
    reason: str = ""  # why it was skipped
    notes: int = 0
    bars: int = 0


def trim_leading_empty_bars(clip: Clip) -> Clip:
    """Start the clip at the bar of its first note (tempo and time signature carried over).

    Untrimmed leading silence teaches a model to open with empty bars — one cause of silent outputs.
    """
    if not clip.notes:
        return clip
    first_bar = clip.bar_index_at(clip.notes[0].start)
    if first_bar == 0:
        return clip
    return clip.slice_bars(first_bar, clip.num_bars)


def bar_statistics(ids: Sequence[int] | np.ndarray, tokenizer: RemiTokenizer) -> tuple[int, int, int]:
    """(bars, empty bars, most notes in one bar) of an encoded sequence."""
    ids = np.asarray(ids)
    is_pitch = np.isin(ids, tokenizer.kind_ids["Pitch"])
    bar_starts = np.flatnonzero(ids == tokenizer.bar_id)
    if len(bar_starts) == 0:
        return 0, 0, 0
    notes_per_bar = np.add.reduceat(is_pitch.astype(np.int64), bar_starts)
    return len(bar_starts), int((notes_per_bar == 0).sum()), int(notes_per_bar.max())


def tokenize_clip(clip: Clip, tokenizer: RemiTokenizer) -> FileResult:
    """Trim, tokenize and filter one clip the way prepare-data does."""
    if not clip.notes:
        return FileResult(None, "no piano notes (only GM programs 1–8 are kept)")
    clip = trim_leading_empty_bars(clip)
    ids = np.asarray(tokenizer.encode(clip), dtype=np.int64)
    bars, empty, densest = bar_statistics(ids, tokenizer)
    if bars == 0:
        return FileResult(None, "no bars after tokenization")
    if densest > MAX_NOTES_PER_BAR:
        return FileResult(None, f"too dense: {densest} notes in one bar (> {MAX_NOTES_PER_BAR})")
    if empty / bars > MAX_EMPTY_BAR_SHARE:
        return FileResult(None, f"{100 * empty / bars:.0f}% empty bars (> {100 * MAX_EMPTY_BAR_SHARE:.0f}%)")
    if ids.max() >= np.iinfo(TOKEN_DTYPE).max:
        return FileResult(None, "token id does not fit uint16")
    return FileResult(ids.astype(TOKEN_DTYPE), notes=len(clip.notes), bars=bars)


def process_file(path: str | os.PathLike | bytes, tokenizer: RemiTokenizer) -> FileResult:
    """Read, trim, tokenize and filter one MIDI file. Never raises: failures become a reason."""
    try:
        clip, _report = Clip.from_midi(path, mode="piano")
    except MidiFileError as exc:
        return FileResult(None, f"unreadable: {exc}")
    except Exception as exc:  # a corrupt file must never stop a whole run
        return FileResult(None, f"unreadable: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        return tokenize_clip(clip, tokenizer)
    except Exception as exc:
        return FileResult(None, f"tokenization failed: {type(exc).__name__}: {str(exc)[:200]}")


# ---------------------------------------------------------------------------- per-file cache (the journal)
def _tokenizer_fingerprint(tokenizer: RemiTokenizer) -> str:
    return hashlib.sha256(json.dumps(sorted(tokenizer.vocab.items())).encode()).hexdigest()[:16]


def _cache_key(path: Path, fingerprint: str) -> str:
    st = path.stat()
    raw = f"{CACHE_VERSION}|{fingerprint}|{path}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _write_cache(cache_file: Path, result: FileResult) -> None:
    meta = json.dumps({"reason": result.reason, "notes": result.notes, "bars": result.bars})
    ids = result.ids if result.ids is not None else np.zeros(0, dtype=TOKEN_DTYPE)
    tmp = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, ids=ids, ok=np.array(result.ids is not None), meta=np.array(meta))
    os.replace(tmp, cache_file)  # atomic: a killed run never leaves a half-written entry


def _read_cache(cache_file: Path) -> FileResult | None:
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            ids = z["ids"] if bool(z["ok"]) else None
        return FileResult(ids, meta["reason"], meta["notes"], meta["bars"])
    except Exception:
        return None  # unreadable entry: the file is processed again


_worker_tokenizer: RemiTokenizer | None = None


def _worker_init() -> None:
    from engine.tokenizer import RemiTokenizer
    global _worker_tokenizer
    _worker_tokenizer = RemiTokenizer()


def _worker_process(job: tuple[str, str]) -> tuple[str, bool]:
    path, cache_file = job
    result = process_file(path, _worker_tokenizer)
    _write_cache(Path(cache_file), result)
    return path, result.ids is not None


# ---------------------------------------------------------------------------- prepare
def prepare(
    roots: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Build DATA_DIR from MIDI folders; returns the manifest. Re-running reuses the per-file cache."""
    from engine.tokenizer import RemiTokenizer
    from tqdm import tqdm

    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise UserError("--val-frac and --test-frac must be in [0, 1) and sum to less than 1")
    out = Path(out_dir)
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = RemiTokenizer()
    fingerprint = _tokenizer_fingerprint(tokenizer)
    sources = find_midi_files(roots)
    if not sources:
        raise UserError("no .mid/.midi files found in " + ", ".join(map(str, roots)))

    cache_files = {s.path: cache_dir / f"{_cache_key(s.path, fingerprint)}.npz" for s in sources}
    todo = [s for s in sources if not cache_files[s.path].exists()]
    started = time.time()
    if todo:
        jobs = [(str(s.path), str(cache_files[s.path])) for s in todo]
        bar = tqdm(total=len(jobs), desc="prepare-data", unit="file", disable=not progress,
                   initial=0, postfix={"cached": len(sources) - len(todo)})
        if workers > 1:
            with get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
                for _ in pool.imap_unordered(_worker_process, jobs, chunksize=4):
                    bar.update()
        else:
            _worker_init()
            for job in jobs:
                _worker_process(job)
                bar.update()
        bar.close()

    # Read every result first: the split of a piece depends on the melodies of all the others.
    results: list[tuple[SourceFile, FileResult]] = []
    skipped = []
    for src in sources:
        result = _read_cache(cache_files[src.path])
        if result is None:  # a damaged cache entry: redo it here rather than fail
            result = process_file(src.path, tokenizer)
            _write_cache(cache_files[src.path], result)
        if result.ids is None:
            skipped.append({"file": src.name, "reason": result.reason})
            continue
        results.append((src, result))
    melodies: dict[str, set[int]] = defaultdict(set)
    pitch_of = pitch_table(tokenizer)
    for src, result in results:
        melodies[src.piece] |= melody_ngrams(result.ids, tokenizer, pitch_of=pitch_of)
    canonical = canonical_pieces(melodies)
    groups: dict[str, list[str]] = defaultdict(list)
    for piece in sorted(canonical):
        groups[canonical[piece]].append(piece)

    # Assemble the splits, in a fixed (sorted) order so output is deterministic.
    index: dict[str, list] = {s: [] for s in SPLITS}
    chunks: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    offsets = {s: 0 for s in SPLITS}
    stats = {s: {"files": 0, "pieces": set(), "tokens": 0, "notes": 0, "bars": 0} for s in SPLITS}
    for src, result in results:
        split = split_of(canonical[src.piece], val_frac, test_frac, seed)
        n = len(result.ids)
        index[split].append([offsets[split], n, src.piece, src.name, canonical[src.piece]])
        chunks[split].append(result.ids)
        offsets[split] += n
        st = stats[split]
        st["files"] += 1
        st["pieces"].add(canonical[src.piece])
        st["tokens"] += n
        st["notes"] += result.notes
        st["bars"] += result.bars

    for split in SPLITS:
        data = np.concatenate(chunks[split]) if chunks[split] else np.zeros(0, dtype=TOKEN_DTYPE)
        tmp = out / f".{split}.bin.tmp"
        data.astype(TOKEN_DTYPE).tofile(tmp)
        os.replace(tmp, out / f"{split}.bin")
    atomic_write_text(out / "index.json", json.dumps(index))
    tokenizer.save(out)

    manifest = {
        "format": "smart-prepared-data/1",
        "sources": [str(Path(r).expanduser().resolve()) for r in roots],
        "files_found": len(sources),
        "files_used": sum(stats[s]["files"] for s in SPLITS),
        "files_skipped": len(skipped),
        "splits": {s: {**stats[s], "pieces": len(stats[s]["pieces"])} for s in SPLITS},
        "vocab_size": tokenizer.vocab_size,
        "skipped": skipped,
        "merged_pieces": {c: members for c, members in groups.items() if len(members) > 1},
        "config": {
            "val_frac": val_frac, "test_frac": test_frac, "seed": seed,
            "split_by": "canonical piece: the containing folder (files directly in a scanned root are their own "
                        "piece), ASAP repeat variants folded into their piece, pieces whose top-voice "
                        f"{MELODY_NGRAM}-interval n-grams overlap (Jaccard >= {SAME_MELODY_JACCARD}) grouped",
            "piano_handling": "Clip.from_midi(mode='piano'): GM programs 1-8 merged, duplicates dropped, sustain applied",
            "trim_leading_empty_bars": True,
            "max_notes_per_bar": MAX_NOTES_PER_BAR, "max_empty_bar_share": MAX_EMPTY_BAR_SHARE,
            "token_dtype": np.dtype(TOKEN_DTYPE).name,
            "sequences": "no BOS/EOS stored; added at training time",
        },
        "seconds": round(time.time() - started, 1),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


# ---------------------------------------------------------------------------- reading prepared data
@dataclass(frozen=True)
class SequenceInfo:
    offset: int
    length: int
    piece: str
    file: str
    canonical: str = ""  # the canonical piece (data prepared before canonical ids: empty)


class TokenSplit:
    """One split of a prepared DATA_DIR: a uint16 memmap and its sequence index."""

    def __init__(self, data_dir: str | os.PathLike, split: str):
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
        self.dir = Path(data_dir)
        if not (self.dir / "manifest.json").exists():
            raise UserError(f"{self.dir} is not a prepared data folder (no manifest.json; run `smart prepare-data`)")
        index = json.loads((self.dir / "index.json").read_text())
        self.sequences = [SequenceInfo(*row) for row in index[split]]
        path = self.dir / f"{split}.bin"
        size = path.stat().st_size if path.exists() else 0
        self.tokens = (np.memmap(path, dtype=TOKEN_DTYPE, mode="r") if size
                       else np.zeros(0, dtype=TOKEN_DTYPE))
        self.split = split

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> np.ndarray:
        s = self.sequences[i]
        return self.tokens[s.offset:s.offset + s.length]

    @property
    def num_tokens(self) -> int:
        return int(sum(s.length for s in self.sequences))


def load_tokenizer(data_dir: str | os.PathLike) -> RemiTokenizer:
    from engine.tokenizer import RemiTokenizer
    try:
        return RemiTokenizer.load(data_dir)
    except (OSError, ValueError) as exc:
        raise UserError(f"tokenizer in {data_dir} does not load: {exc}") from None


# ---------------------------------------------------------------------------- augmentation
class TokenAugmenter:
    """Transposition and tempo jitter on token ids (lookup tables, no re-tokenization)."""

    def __init__(self, tokenizer: RemiTokenizer, max_transpose: int = 5, tempo_jitter: float = 0.1):
        self.max_transpose = max_transpose
        self.tempo_jitter = tempo_jitter
        vocab = tokenizer.vocab_size
        self.pitch_of = pitch_table(tokenizer)
        self.id_of_pitch = np.full(128, -1, dtype=np.int64)
        self.id_of_pitch[self.pitch_of[self.pitch_of >= 0]] = np.flatnonzero(self.pitch_of >= 0)
        self.tempo_ids = np.asarray(tokenizer.kind_ids.get("Tempo", []), dtype=np.int64)
        self.tempo_values = np.array([tokenizer.token_value(int(i)) for i in self.tempo_ids], dtype=float)
        self.is_tempo = np.zeros(vocab, dtype=bool)
        self.is_tempo[self.tempo_ids] = True
        self.tempo_pos = np.full(vocab, -1, dtype=np.int64)
        self.tempo_pos[self.tempo_ids] = np.arange(len(self.tempo_ids))

    def transpose(self, ids: np.ndarray, semitones: int) -> np.ndarray | None:
        """Shift every Pitch id; None when a note would leave the piano range 21–108."""
        ids = np.asarray(ids, dtype=np.int64)
        pitches = self.pitch_of[ids]
        mask = pitches >= 0
        if not mask.any() or semitones == 0:
            return ids.copy()
        shifted = pitches[mask] + semitones
        lo, hi = PIANO_PITCH_RANGE
        if shifted.min() < lo or shifted.max() > hi:
            return None
        out = ids.copy()
        out[mask] = self.id_of_pitch[shifted]
        return out

    def random_transpose(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Transpose by a random shift in ±max_transpose that keeps every note on the keyboard."""
        ids = np.asarray(ids, dtype=np.int64)
        pitches = self.pitch_of[ids]
        pitches = pitches[pitches >= 0]
        if len(pitches) == 0 or self.max_transpose == 0:
            return ids.copy()
        lo, hi = PIANO_PITCH_RANGE
        low = max(-self.max_transpose, lo - int(pitches.min()))
        high = min(self.max_transpose, hi - int(pitches.max()))
        if low > high:
            return ids.copy()
        return self.transpose(ids, int(rng.integers(low, high + 1)))

    def jitter_tempo(self, ids: np.ndarray, factor: float) -> np.ndarray:
        """Scale every Tempo token by `factor`, clamped to the tokenizer's tempo range."""
        ids = np.asarray(ids, dtype=np.int64)
        mask = self.is_tempo[ids]
        if not mask.any():
            return ids.copy()
        values = self.tempo_values[self.tempo_pos[ids[mask]]] * factor
        nearest = np.abs(values[:, None] - self.tempo_values[None, :]).argmin(axis=1)
        out = ids.copy()
        out[mask] = self.tempo_ids[nearest]
        return out

    def __call__(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = self.random_transpose(ids, rng)
        if self.tempo_jitter > 0:
            out = self.jitter_tempo(out, float(rng.uniform(1 - self.tempo_jitter, 1 + self.tempo_jitter)))
        return out


# ---------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare-data", help="tokenize MIDI folders into train/val/test splits (split by piece)",
        description="Scan folders for .mid/.midi, apply the paper's piano handling and filters, "
                    "tokenize, and write train/val/test token files split by piece.",
        formatter_class=HelpFormatter,
        epilog=examples("smart prepare-data ~/midi/pop909 ~/midi/asap --out data/piano"))
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders (scanned recursively) or MIDI files")
    p.add_argument("--out", required=True, metavar="DATA_DIR", help="output folder")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)),
                   help="parallel worker processes (default: one per CPU core)")
    p.add_argument("--val-frac", type=float, default=0.05, help="share of pieces for validation")
    p.add_argument("--test-frac", type=float, default=0.05, help="share of pieces for the held-out test set")
    p.add_argument("--seed", type=int, default=0, help="salt for the piece → split hash")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    manifest = prepare(args.dirs, args.out, workers=args.workers, val_frac=args.val_frac,
                       test_frac=args.test_frac, seed=args.seed, progress=not args.quiet)
    for item in manifest["skipped"]:
        print(f"skipped {item['file']}: {item['reason']}", file=sys.stderr)
    summary = {s: {k: manifest["splits"][s][k] for k in ("files", "pieces", "tokens")} for s in SPLITS}
    print(json.dumps({"out": str(args.out), "files_found": manifest["files_found"],
                      "files_used": manifest["files_used"], "files_skipped": manifest["files_skipped"],
                      "splits": summary}))
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"prepare-data: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
