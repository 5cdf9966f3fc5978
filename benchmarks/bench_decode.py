"""Decoding throughput: HF `generate` (static cache) vs `engine.fastdecode.Phi3Decoder`.

Paper-shaped Phi-3 (4 layers, hidden 512, 8 heads, intermediate 1536, vocab 600) with random weights,
greedy 512-token generations from 64-token prompts, batch 1 and batch 8, all in one run so the ratios are
measured on the same machine state. Targets on 2 CPU cores: >= 600 tok/s at batch 1, >= 1500 tok/s total
at batch 8. Prints a GPU section when CUDA is available.

    uv run python benchmarks/bench_decode.py [--new-tokens 512] [--prompt 64] [--threads N] [--skip-hf]
                                             [--model DIR]   # trained weights instead of random ones

Token agreement of the approximate weight modes (fp16, int8) is measured against the exact decoder's
greedy tokens; with random weights logits are near-ties, so only a trained model's agreement is telling.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from transformers import Phi3Config, Phi3ForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from engine.fastdecode import Phi3Decoder, fp16_weights_available, int8_weights_available  # noqa: E402
from engine.sampling import sample_next  # noqa: E402

VOCAB = 600


def paper_model(device: str, dtype: torch.dtype) -> Phi3ForCausalLM:
    torch.manual_seed(0)
    config = Phi3Config(
        vocab_size=VOCAB, hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8,
        intermediate_size=1536, max_position_embeddings=2048, rope_theta=10000.0, tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return Phi3ForCausalLM(config).to(device=device, dtype=dtype).eval()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def hf_generate(model, prompts: torch.Tensor, new_tokens: int) -> tuple[float, torch.Tensor]:
    kwargs = dict(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, cache_implementation="static",
        pad_token_id=0, eos_token_id=None,
    )
    mask = torch.ones_like(prompts)
    with torch.inference_mode():
        model.generate(prompts[:, :8], attention_mask=mask[:, :8], **{**kwargs, "max_new_tokens": 4,
                                                                       "min_new_tokens": 4})
        sync(prompts.device.type)
        t0 = time.perf_counter()
        out = model.generate(prompts, attention_mask=mask, **kwargs)
        sync(prompts.device.type)
    return time.perf_counter() - t0, out[:, prompts.shape[1]:]


def fast_generate(model, prompts: torch.Tensor, new_tokens: int, weights: str, top_p: float | None = None
                  ) -> tuple[float, float, torch.Tensor]:
    """Returns (seconds incl. decoder build, build seconds, tokens)."""
    B, T = prompts.shape
    device = prompts.device.type
    out = torch.empty(B, new_tokens, dtype=torch.long, device=prompts.device)
    gen = torch.Generator(device=prompts.device).manual_seed(0)
    # Warm-up on a throwaway decoder (first-call allocator / kernel selection costs).
    warm = Phi3Decoder(model, B, T + 8, weights=weights)
    warm.step(warm.prefill(prompts).argmax(-1))
    sync(device)
    t0 = time.perf_counter()
    decoder = Phi3Decoder(model, B, T + new_tokens, weights=weights)
    build = time.perf_counter() - t0
    logits = decoder.prefill(prompts)
    for i in range(new_tokens):
        if top_p is None:
            nxt = logits.argmax(-1)
        else:
            nxt = sample_next(logits, temperature=1.0, top_p=top_p, generator=gen)
        out[:, i] = nxt
        if i + 1 < new_tokens:
            logits = decoder.step(nxt)
    sync(device)
    return time.perf_counter() - t0, build, out


def loop_generate(model, prompts: torch.Tensor, new_tokens: int, weights: str, top_p: float) -> float:
    """Seconds for `new_tokens` per row through the one sampling loop (`engine.sampling`), as the policy,
    host and GRPO rollouts run it: top-p sampling from one group's generator, rules checked per row."""
    from engine.fastdecode import PackedWeights
    from engine.sampling import GeneratedRow, RowGroup, RowRules, SamplingLoop

    packed = PackedWeights(model, weights) if weights != "model" else None
    rules = RowRules(temperature=1.0, top_p=top_p, max_new_tokens=new_tokens)
    group = RowGroup([GeneratedRow(p) for p in prompts.tolist()], rules,
                     torch.Generator(device=prompts.device).manual_seed(0))
    loop = SamplingLoop(model, pad_id=0, bar_id=None, packed=packed, headroom=new_tokens)
    sync(prompts.device.type)
    t0 = time.perf_counter()
    loop.add([group])
    while not group.done:
        loop.step()
    sync(prompts.device.type)
    return time.perf_counter() - t0


def load_model(model_dir: str | None, device: str, dtype: torch.dtype) -> Phi3ForCausalLM:
    if model_dir is None:
        return paper_model(device, dtype)
    from engine.policy import Policy

    return Policy.load(model_dir, dtype=dtype).model.to(device).eval()


def run(device: str, dtype: torch.dtype, new_tokens: int, prompt_len: int, skip_hf: bool,
        model_dir: str | None = None) -> None:
    model = load_model(model_dir, device, dtype)
    vocab = model.config.vocab_size
    modes = ["model"]
    if device == "cpu" and dtype == torch.float32:
        modes += [m for m, ok in (("fp16", fp16_weights_available()), ("int8", int8_weights_available())) if ok]
    for B in (1, 8):
        g = torch.Generator().manual_seed(B)
        prompts = torch.randint(3, vocab, (B, prompt_len), generator=g).to(device)
        total = B * new_tokens
        hf_tokens = None
        if not skip_hf:
            secs, hf_tokens = hf_generate(model, prompts, new_tokens)
            print(f"  {device} B={B}  HF generate (static cache)       {total / secs:8.0f} tok/s  ({secs:.2f} s)",
                  flush=True)
        exact_tokens = None
        for mode in modes:
            secs, build, toks = fast_generate(model, prompts, new_tokens, mode)
            note = ""
            if hf_tokens is not None:
                same = (toks == hf_tokens).float().mean().item()
                note = f"  greedy tokens == HF: {same * 100:.1f}%"
            if mode == "model":
                exact_tokens = toks
            else:
                # Position of the first divergence from exact greedy decoding (later tokens follow other contexts).
                diverged = (toks != exact_tokens).int().argmax(dim=1).float()
                diverged[(toks == exact_tokens).all(dim=1)] = new_tokens
                note += f"  first token != exact greedy at {diverged.mean().item():.0f} (mean over rows)"
            print(f"  {device} B={B}  Phi3Decoder weights={mode:5s} greedy  {total / secs:8.0f} tok/s  "
                  f"({secs:.2f} s, build {build * 1e3:.0f} ms){note}", flush=True)
        secs, _, _ = fast_generate(model, prompts, new_tokens, modes[-1], top_p=0.95)
        print(f"  {device} B={B}  Phi3Decoder weights={modes[-1]:5s} top_p=0.95 sampling "
              f"{total / secs:8.0f} tok/s", flush=True)
        secs = loop_generate(model, prompts, new_tokens, modes[-1], top_p=0.95)
        print(f"  {device} B={B}  SamplingLoop weights={modes[-1]:5s} top_p=0.95 (rules per row) "
              f"{total / secs:8.0f} tok/s", flush=True)


def teacher_forced_nll(model, data_dir: str, modes: list[str], sequences: int, length: int) -> None:
    """Mean NLL per token of real validation sequences, fed token by token through each weight mode:
    what the approximation costs the model's predictions (exact decoding is the reference)."""
    import numpy as np

    from training.data import TokenSplit

    split = TokenSplit(data_dir, "val")
    rng = np.random.default_rng(0)
    picks = [split[int(i)] for i in rng.choice(len(split), size=min(sequences, len(split)), replace=False)]
    rows = [torch.as_tensor(np.asarray(seq[:length], dtype=np.int64)) for seq in picks if len(seq) > length // 2]
    for mode in modes:
        total, count = 0.0, 0
        with torch.inference_mode():
            for ids in rows:
                decoder = Phi3Decoder(model, 1, len(ids), weights=mode)
                logits = decoder.prefill(ids[:1].view(1, 1))
                for t in range(1, len(ids)):
                    total -= torch.log_softmax(logits[0], -1)[ids[t]].item()
                    count += 1
                    if t + 1 < len(ids):
                        logits = decoder.step(ids[t].view(1))
        print(f"  teacher-forced NLL, weights={mode:5s}: {total / count:.4f} nats/token over {count} tokens "
              f"({len(rows)} validation sequences)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip-hf", action="store_true", help="skip the (slow) HF generate baseline")
    parser.add_argument("--model", default=None, help="a model directory (e.g. resources/models/default)")
    parser.add_argument("--nll-data", default=None, metavar="DATA_DIR",
                        help="with --model: also compare teacher-forced NLL of each weight mode on DATA_DIR's val split")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, "
          f"{args.prompt}-token prompts, {args.new_tokens} new tokens, "
          f"{'weights of ' + args.model if args.model else 'paper config, random weights'}, greedy unless noted")
    run("cpu", torch.float32, args.new_tokens, args.prompt, args.skip_hf, args.model)
    if args.nll_data and args.model:
        modes = ["model"] + [m for m, ok in (("fp16", fp16_weights_available()), ("int8", int8_weights_available())) if ok]
        teacher_forced_nll(load_model(args.model, "cpu", torch.float32), args.nll_data, modes, sequences=8, length=512)
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
        run("cuda", torch.float32, args.new_tokens, args.prompt, args.skip_hf, args.model)
        run("cuda", torch.bfloat16, args.new_tokens, args.prompt, args.skip_hf, args.model)


if __name__ == "__main__":
    main()
