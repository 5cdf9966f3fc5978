"""`smart nll`: mean negative log-likelihood per token of a model on MIDI files or prepared data.

MIDI files and folders are tokenized exactly as prepare-data does (piano handling, leading empty
bars trimmed, the paper's filters); a prepared DATA_DIR is read from its token files (`--split`).
Each sequence is scored as BOS + tokens + EOS (every token after BOS, EOS included). Sequences
longer than the window are scored with a sliding window: each token once, with at least
`context - stride` tokens of context once past the first window.
Prints one JSON object: nll_per_token, tokens, files, skipped, vocab_size (+ perplexity and details),
and `by_dataset`: the same figures per dataset — the scanned folder a file came from (`pop909`,
`asap`), since pop songs and classical pieces differ in how predictable they are and a mixed mean
hides which one a change helped. `--per-dataset` applies the `--max-tokens` budget to each dataset.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from engine.cliutil import HelpFormatter, examples
from engine.errors import UserError
from training.lazy_torch import no_grad

if TYPE_CHECKING:  # torch loads in the functions that use it: `smart … --help` stays quick
    import torch

DEFAULT_CONTEXT = 1024  # the default pretraining --seq-len: positions beyond it were never trained


def score_windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(window start, window end, first scored target) covering targets 1..n-1 exactly once."""
    if n < 2:
        return []
    if n <= context:
        return [(0, n, 1)]
    windows, scored_until, begin = [], 1, 0
    while scored_until < n:
        end = min(begin + context, n)
        windows.append((begin, end, scored_until))
        scored_until = end
        begin = min(begin + stride, n - 1)
        if end == n:
            break
    return windows


@no_grad
def sequences_nll(model, sequences: Iterable[Sequence[int]], *, pad_id: int, context: int = DEFAULT_CONTEXT,
                  stride: int | None = None, batch_size: int = 8, device=None) -> tuple[float, int]:
    """Summed NLL (nats) and number of scored tokens over complete sequences (BOS/EOS already added)."""
    import torch
    device = device or next(model.parameters()).device
    context = min(context, int(model.config.max_position_embeddings))
    stride = stride or max(1, context // 2)
    if not 0 < stride <= context:
        raise UserError("--stride must be between 1 and the context length")
    items = []  # (tokens, number of leading positions whose targets are not scored)
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        for begin, end, first_target in score_windows(len(seq), context, stride):
            items.append((seq[begin:end], first_target - begin))
    items.sort(key=lambda it: len(it[0]))  # similar lengths together: little padding
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        width = max(len(t) for t, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for r, (toks, skip) in enumerate(chunk):
            row = torch.from_numpy(toks)
            ids[r, :len(toks)] = row
            mask[r, :len(toks)] = 1
            labels[r, skip:len(toks)] = row[skip:]
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        targets = labels[:, 1:].to(device)
        total += float(torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"))
        count += int((targets != -100).sum())
    return total, count


def dataset_of(name: str) -> str:
    """The dataset of a file as prepare-data names it ("<scanned folder>/<path inside it>")."""
    return name.split("/", 1)[0] if "/" in name else "(files)"


def collect_sequences(paths: Sequence[str], tokenizer, split: str, max_tokens: int | None = None,
                      per_dataset: bool = False) -> tuple[list[tuple[str, np.ndarray]], int, list[dict]]:
    """(dataset, token sequence with BOS/EOS) pairs from MIDI files, folders, or prepared DATA_DIRs.

    max_tokens: stop once this many tokens are collected (per dataset when `per_dataset`); prepared
    splits are then sampled in a fixed random order (seed 0), so a budgeted score is reproducible and
    not just the first composer.
    """
    from training.data import TokenSplit, find_midi_files, load_tokenizer, process_file

    seqs, files, skipped = [], 0, []
    taken: dict[str, int] = {}
    bos, eos = tokenizer.bos_id, tokenizer.eos_id

    def full(dataset: str) -> bool:
        if not max_tokens:
            return False
        return (taken.get(dataset, 0) if per_dataset else sum(taken.values())) >= max_tokens

    def add(dataset: str, ids) -> None:
        seq = np.concatenate([[bos], np.asarray(ids, dtype=np.int64), [eos]])
        seqs.append((dataset, seq))
        taken[dataset] = taken.get(dataset, 0) + len(seq)

    midi_roots = []
    for p in paths:
        path = Path(p)
        if path.is_dir() and (path / "manifest.json").exists():
            data_tok = load_tokenizer(path)
            if data_tok.vocab != tokenizer.vocab:
                raise UserError(f"{path} was tokenized with another vocabulary than the model's")
            part = TokenSplit(path, split)
            order = np.random.default_rng(0).permutation(len(part)) if max_tokens else range(len(part))
            for i in order:
                dataset = dataset_of(part.sequences[int(i)].file)
                if full(dataset):
                    if per_dataset:
                        continue
                    break
                add(dataset, part[int(i)])
                files += 1
        else:
            midi_roots.append(p)
    if midi_roots:
        for src in find_midi_files(midi_roots):
            dataset = dataset_of(src.name)
            if full(dataset):
                if per_dataset:
                    continue
                break
            result = process_file(src.path, tokenizer)
            if result.ids is None:
                skipped.append({"file": src.name, "reason": result.reason})
                continue
            add(dataset, result.ids)
            files += 1
    return seqs, files, skipped


def _figures(total: float, count: int, files: int) -> dict:
    nll = total / count if count else float("nan")
    return {"nll_per_token": round(nll, 6), "perplexity": round(math.exp(nll), 4) if count else None,
            "tokens": count, "files": files}


def evaluate(model_dir: str | None, paths: Sequence[str], *, split: str = "test", context: int = DEFAULT_CONTEXT,
             stride: int | None = None, batch_size: int = 8, max_tokens: int | None = None, per_dataset: bool = False,
             policy=None) -> dict:
    from transformers.utils import logging as hf_logging

    from engine.policy import Policy, PolicyLoadError

    hf_logging.disable_progress_bar()
    if policy is None:
        try:
            policy = Policy.load(model_dir)
        except PolicyLoadError as exc:
            raise UserError(str(exc)) from None
    tok = policy.tokenizer
    seqs, files, skipped = collect_sequences(paths, tok, split, max_tokens, per_dataset)
    if not seqs:
        raise UserError("nothing to score: no usable MIDI files or sequences in " + ", ".join(paths))
    by_dataset, total, count = {}, 0.0, 0
    for dataset in sorted({d for d, _ in seqs}):
        group = [q for d, q in seqs if d == dataset]
        t, c = sequences_nll(policy.model, group, pad_id=tok.pad_id, context=context, stride=stride,
                             batch_size=batch_size)
        by_dataset[dataset] = _figures(t, c, len(group))
        total, count = total + t, count + c
    return {
        **_figures(total, count, files),
        "skipped": len(skipped),
        "vocab_size": tok.vocab_size,
        "context": min(context, policy.context_length),
        "model": str(policy.path) if policy.path else model_dir,
        "split": split,
        "by_dataset": by_dataset,
        "skipped_files": skipped,
    }


def register(subparsers) -> None:
    p = subparsers.add_parser("nll", help="mean NLL per token of a model on MIDI files or a prepared split",
                              description="Score MIDI files/folders (or a prepared DATA_DIR split) with a model.",
                              formatter_class=HelpFormatter,
                              epilog=examples("smart nll --model runs/base/final --data data/piano --max-tokens 200000"))
    p.add_argument("--model", default=None, metavar="DIR", help="model directory (default: the shipped model)")
    p.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="MIDI files, folders, or prepared DATA_DIRs")
    p.add_argument("--split", choices=["train", "val", "test"], default="test", help="split of a prepared DATA_DIR")
    p.add_argument("--context", type=int, default=DEFAULT_CONTEXT, help="sliding-window length in tokens")
    p.add_argument("--stride", type=int, default=None, help="window step (default: half the context)")
    p.add_argument("--batch-size", type=int, default=8, help="windows scored together")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="score only about this many tokens (whole sequences; prepared splits sampled with seed 0) "
                        "(default: all)")
    p.add_argument("--per-dataset", action="store_true",
                   help="apply --max-tokens to each dataset (pop909, asap, ...) rather than to all together")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 lets torch choose (default: 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    if args.context < 2:
        raise UserError("--context must be at least 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(evaluate(args.model, args.data, split=args.split, context=args.context, stride=args.stride,
                              batch_size=args.batch_size, max_tokens=args.max_tokens, per_dataset=args.per_dataset)))
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.nll")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"nll: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
