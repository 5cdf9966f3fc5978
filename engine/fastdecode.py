"""Lean incremental decoding for the Phi-3 policy (CPU and CUDA).

`Phi3Decoder` runs the same computation as `transformers.Phi3ForCausalLM` with a preallocated KV cache
and far less per-token overhead than `generate`: no cache objects, no mask building per step, RoPE tables
precomputed once, logits only for the last position.

Weights are read from the HF module when the decoder is built. In the default ``weights="model"`` mode the
decoder holds views of the live parameters, so in-place optimizer updates are seen immediately. In
``weights="fp16"`` mode (CPU, float32 models only) the linear weights are packed once into fbgemm fp16
panels: decoding at batch 1 on a small CPU is memory-bandwidth bound (the paper model's 56 MB of fp32
weights do not fit in cache), and halving the bytes read per token speeds it up. ``weights="int8"`` (CPU,
float32 models) goes further: weights quantized per output channel to int8 (fbgemm, activations quantized
per call), a quarter of the bytes — the fastest batch-1 mode, approximate like fp16 (see the benchmark's
token agreement); never use it where exact log-probabilities matter (GRPO rollouts). Both are snapshots:
build a new decoder after training updates (packing the paper model takes ~0.2 s).

Sliding a window past ``max_len`` is the caller's job: ``reset()`` then ``prefill()`` the most recent tokens.

This module must never import Qt.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from engine.quantized import PackedLinear, fp16_weights_available, int8_weights_available

__all__ = ["Phi3Decoder", "PackedWeights", "fp16_weights_available", "int8_weights_available",
           "WEIGHT_MODES"]

WEIGHT_MODES = ("model", "fp16", "int8")


class _Layer:
    __slots__ = ("ln1", "ln2", "qkv", "o", "gate_up", "down")

    def __init__(self, hf_layer, mode: str):
        self.ln1 = hf_layer.input_layernorm.weight.detach()
        self.ln2 = hf_layer.post_attention_layernorm.weight.detach()
        self.qkv = PackedLinear(hf_layer.self_attn.qkv_proj.weight.detach(), mode)
        self.o = PackedLinear(hf_layer.self_attn.o_proj.weight.detach(), mode)
        self.gate_up = PackedLinear(hf_layer.mlp.gate_up_proj.weight.detach(), mode)
        self.down = PackedLinear(hf_layer.mlp.down_proj.weight.detach(), mode)


def _check_weight_mode(weights: str, device: torch.device, dtype: torch.dtype) -> None:
    if weights not in WEIGHT_MODES:
        raise ValueError(f"weights must be one of {WEIGHT_MODES}, got {weights!r}")
    if weights == "model":
        return
    if device.type != "cpu" or dtype != torch.float32:
        raise ValueError(f"weights={weights!r} packs float32 weights for CPU; use weights='model' on CUDA/bf16")
    available = fp16_weights_available() if weights == "fp16" else int8_weights_available()
    if not available:
        raise RuntimeError(f"weights={weights!r} needs torch's fbgemm kernels, unavailable in this build")


class PackedWeights:
    """A model's linear weights packed once for an approximate CPU mode ("fp16" or "int8"), to be shared
    by every decoder built over that model (packing the paper model takes ~0.1–0.2 s, too long to repeat
    per request). A snapshot: pack again after the weights change."""

    def __init__(self, model, weights: str):
        embed = model.model.embed_tokens.weight
        _check_weight_mode(weights, embed.device, embed.dtype)
        if weights == "model":
            raise ValueError("weights='model' reads the live parameters: nothing to pack")
        self.weights = weights
        self.model_ref = weakref.ref(model)
        with torch.no_grad():
            self.layers = [_Layer(layer, weights) for layer in model.model.layers[: model.config.num_hidden_layers]]
            self.lm_head = PackedLinear(model.lm_head.weight.detach(), weights)


def _check_supported(model, max_len: int) -> None:
    config = model.config
    problems = []
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={config.hidden_act!r} (only 'silu')")
    # transformers 5 keeps RoPE settings in rope_parameters; 4.x used rope_scaling (None when default).
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        problems.append(f"rope_type={rope_type!r} (only 'default', i.e. rope_scaling=None)")
    if getattr(model.model.rotary_emb, "attention_scaling", 1.0) != 1.0:
        problems.append("RoPE attention_scaling != 1")
    window = getattr(config, "sliding_window", None)
    if window is not None and window < max_len:
        problems.append(f"sliding_window={window} < max_len={max_len} (sliding-window attention)")
    if config.num_attention_heads % config.num_key_value_heads:
        problems.append("num_attention_heads not a multiple of num_key_value_heads")
    if problems:
        raise NotImplementedError("Phi3Decoder does not support this configuration: " + "; ".join(problems))


class Phi3Decoder:
    """Incremental forward pass over a Phi3ForCausalLM's weights with a static KV cache.

    Cache layout: [layers, batch, kv_heads, max_len, head_dim]. All rows share one cache index per step;
    prompts of different lengths are LEFT-padded, pads are masked out as keys, and each row's positions
    count from its first real token (HF `generate` convention), so logits match HF.
    """

    def __init__(self, model, batch_size: int, max_len: int, device=None, weights: str = "model",
                 packed: PackedWeights | None = None, row_capacity: int | None = None):
        """`packed`: weights packed once by `PackedWeights` for this model (its mode overrides `weights`).
        `row_capacity`: rows the cache has room for (default `batch_size`), so `append` can add rows in place."""
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size and max_len must be >= 1, got {batch_size}, {max_len}")
        row_capacity = max(batch_size, row_capacity or batch_size)
        _check_supported(model, max_len)
        config = model.config
        embed = model.model.embed_tokens.weight
        self.device = torch.device(device) if device is not None else embed.device
        if embed.device != self.device:
            raise ValueError(f"model weights are on {embed.device} but device={self.device}; move the model first")
        self.dtype = embed.dtype
        if packed is not None:
            if packed.model_ref() is not model:
                raise ValueError("packed weights belong to another model")
            weights = packed.weights
        _check_weight_mode(weights, self.device, self.dtype)
        self.weights = weights
        self.packed = packed
        self.batch_size = batch_size
        self.max_len = max_len

        attn = model.model.layers[0].self_attn
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = attn.head_dim
        self.q_size = self.n_heads * self.head_dim
        self.kv_size = self.n_kv_heads * self.head_dim
        self.eps = config.rms_norm_eps
        self.n_layers = config.num_hidden_layers
        self.vocab_size = model.lm_head.weight.shape[0]

        with torch.no_grad():
            self.embed = embed.detach()
            if packed is not None:
                self.layers = packed.layers
            else:
                self.layers = [_Layer(layer, weights) for layer in model.model.layers[: self.n_layers]]
            self.final_norm = model.model.norm.weight.detach()
            self.lm_head = packed.lm_head if packed is not None else PackedLinear(model.lm_head.weight.detach(), weights)

            # RoPE tables computed exactly as Phi3RotaryEmbedding.forward (fp32 product, then cast).
            inv_freq = model.model.rotary_emb.inv_freq.detach().to(device=self.device, dtype=torch.float32)
            self.rot_dim = 2 * inv_freq.numel()
            freqs = torch.arange(max_len, device=self.device, dtype=torch.float32)[:, None] * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            self._cos = emb.cos().to(self.dtype)
            # rotate_half(x) * sin == roll(x, rot/2) * [-sin_lo, sin_hi]: folding the sign into the table
            # turns HF's slice/neg/cat/mul/add into roll + addcmul (same values, fewer ops per step).
            sin = emb.sin()
            sin[:, : self.rot_dim // 2].neg_()
            self._sin_signed = sin.to(self.dtype)

            shape = (self.n_layers, row_capacity, self.n_kv_heads, max_len, self.head_dim)
            # Uninitialised: only positions written by prefill/step/splice/append are ever read, and leaving
            # the rest untouched keeps a large cache cheap to allocate.
            self._k_rows = torch.empty(shape, device=self.device, dtype=self.dtype)
            self._v_rows = torch.empty(shape, device=self.device, dtype=self.dtype)
            # Additive key bias: 0 for real tokens, -inf for left pads (only read when a batch has padding).
            self._bias_rows = torch.zeros(row_capacity, 1, 1, max_len, device=self.device, dtype=self.dtype)
            self._pos_rows = torch.zeros(row_capacity, device=self.device, dtype=torch.long)
        self.row_capacity = row_capacity
        self._use_rows(batch_size)
        self._has_padding = False
        self._gqa = self.n_heads != self.n_kv_heads
        self.length = 0

    @classmethod
    def splice(cls, model, parts, capacity: int, row_capacity: int | None = None) -> "Phi3Decoder":
        """A new decoder holding rows `idx` of each `(decoder, idx)` in `parts`, right-aligned at a common
        length, with room for `capacity` positions: how a serving loop joins requests into a running batch,
        drops finished rows, or grows the cache. All parts must decode `model` with the same weights.

        This is the left-padded layout `prefill` itself builds for prompts of different lengths: each row
        keeps its own positions (they count from its first real token) and the columns before it are
        masked out as keys, so its next logits are unchanged.
        """
        parts = [(d, list(idx)) for d, idx in parts if len(idx)]
        if not parts:
            raise ValueError("nothing to splice: every part selects no rows")
        total = sum(len(idx) for _, idx in parts)
        length = max(d.length for d, _ in parts)
        if capacity <= length:
            raise ValueError(f"capacity {capacity} must exceed the spliced length {length}")
        first = parts[0][0]
        if any(d.weights != first.weights or d.packed is not first.packed for d, _ in parts):
            raise ValueError("spliced decoders must share their weights (mode and packing)")
        out = cls(model, batch_size=total, max_len=capacity, device=first.device, weights=first.weights,
                  packed=first.packed, row_capacity=row_capacity)
        padded = False
        dst = 0
        for d, idx in parts:
            n = len(idx)
            src = torch.tensor(idx, dtype=torch.long, device=d.k_cache.device)
            off = length - d.length
            out.k_cache[:, dst:dst + n, :, off:length] = d.k_cache[:, :, :, :d.length].index_select(1, src)
            out.v_cache[:, dst:dst + n, :, off:length] = d.v_cache[:, :, :, :d.length].index_select(1, src)
            bias = out._key_bias[dst:dst + n, 0, 0]
            if off:
                bias[:, :off] = float("-inf")
                # Masked keys are still read: they must be finite (uninitialised memory may hold NaN).
                out.k_cache[:, dst:dst + n, :, :off] = 0
                out.v_cache[:, dst:dst + n, :, :off] = 0
                padded = True
            if d._has_padding:  # without padding the source bias is stale memory, never read
                bias[:, off:length] = d._key_bias[:, 0, 0, :d.length].index_select(0, src)
                padded = True
            out._next_pos[dst:dst + n] = d._next_pos.index_select(0, src)
            dst += n
        out._has_padding = padded
        out.length = length
        return out

    # ------------------------------------------------------------------ rows in place
    def _use_rows(self, n: int) -> None:
        """Decode the first `n` rows of the cache buffers."""
        self.batch_size = n
        self.k_cache = self._k_rows[:, :n]
        self.v_cache = self._v_rows[:, :n]
        self._key_bias = self._bias_rows[:n]
        self._next_pos = self._pos_rows[:n]

    @torch.inference_mode()
    def keep_rows(self, idx) -> None:
        """Keep only rows `idx` (ascending), moved down in place: dropping finished rows without a new cache."""
        idx = list(idx)
        if not idx or any(b <= a for a, b in zip(idx, idx[1:])) or idx[-1] >= self.batch_size:
            raise ValueError("keep_rows needs ascending row indices of this batch, at least one")
        L = self.length
        for dst, src in enumerate(idx):
            if dst != src:  # dst < src: sources not yet moved are never overwritten
                self._k_rows[:, dst, :, :L] = self._k_rows[:, src, :, :L]
                self._v_rows[:, dst, :, :L] = self._v_rows[:, src, :, :L]
                self._bias_rows[dst] = self._bias_rows[src]
                self._pos_rows[dst] = self._pos_rows[src]
        self._use_rows(len(idx))

    def can_append(self, rows: int, length: int) -> bool:
        """Whether `append` can add `rows` rows of `length` positions in place."""
        return self.length > 0 and self.batch_size + rows <= self.row_capacity and length <= self.length < self.max_len

    @torch.inference_mode()
    def append(self, source: "Phi3Decoder", idx) -> None:
        """Add rows `idx` of `source` (no longer than this batch, same weights) after this batch's rows, in place,
        right-aligned at this batch's length as `splice` would place them: their next logits are unchanged."""
        idx = list(idx)
        L, n, B = self.length, len(idx), self.batch_size
        if not self.can_append(n, source.length):
            raise ValueError(f"cannot append {n} rows of length {source.length} to {B} rows of length {L} "
                             f"(room for {self.row_capacity} rows, {self.max_len} positions)")
        if source.weights != self.weights or source.packed is not self.packed:
            raise ValueError("appended rows must come from a decoder with the same weights (mode and packing)")
        src = torch.tensor(idx, dtype=torch.long, device=source.k_cache.device)
        off = L - source.length
        rows = slice(B, B + n)
        self._k_rows[:, rows, :, off:L] = source.k_cache[:, :, :, :source.length].index_select(1, src)
        self._v_rows[:, rows, :, off:L] = source.v_cache[:, :, :, :source.length].index_select(1, src)
        bias = self._bias_rows[rows, 0, 0]
        bias.zero_()  # rows of this buffer may have served earlier rows
        if (off or source._has_padding) and not self._has_padding:
            self._bias_rows[:B].zero_()  # the batch's own bias was never needed, so never kept
        if off:
            bias[:, :off] = float("-inf")
            self._k_rows[:, rows, :, :off] = 0  # read under the -inf bias: must be finite
            self._v_rows[:, rows, :, :off] = 0
            self._has_padding = True
        if source._has_padding:
            bias[:, off:L] = source._key_bias[:, 0, 0, :source.length].index_select(0, src)
            self._has_padding = True
        self._pos_rows[rows] = source._next_pos.index_select(0, src)
        self._use_rows(B + n)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the sequence; the cache memory is reused (stale entries are never read)."""
        self.length = 0
        self._has_padding = False
        self._next_pos.zero_()

    # ------------------------------------------------------------------ pieces
    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), weight, self.eps)
        # HF normalises in fp32 and casts back before applying the weight.
        return weight * F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).to(x.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
        """HF apply_rotary_pos_emb: x [..., head_dim]; tables broadcastable to [..., rot_dim]."""
        half = self.rot_dim // 2
        if self.rot_dim == self.head_dim:
            return torch.addcmul(x * cos, x.roll(half, dims=-1), sin_signed)
        x_rot, x_pass = x[..., : self.rot_dim], x[..., self.rot_dim :]
        rotated = torch.addcmul(x_rot * cos, x_rot.roll(half, dims=-1), sin_signed)
        return torch.cat((rotated, x_pass), dim=-1)

    def _logits(self, h_last: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self._norm(h_last, self.final_norm)).float()

    # ------------------------------------------------------------------ prefill
    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Start a new sequence from LEFT-padded prompts [B, T]; returns last-position logits [B, V] fp32."""
        if input_ids.dim() != 2 or input_ids.shape[0] != self.batch_size:
            raise ValueError(f"input_ids must be [batch_size={self.batch_size}, T], got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if T < 1:
            raise ValueError("prompt must have at least one token")
        if T > self.max_len:
            raise ValueError(f"prompt length {T} exceeds decoder max_len {self.max_len}")
        self.reset()
        input_ids = input_ids.to(self.device)
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {(B, T)}")
            real = attention_mask.to(device=self.device, dtype=torch.bool)
            if not bool(real[:, -1].all()):
                raise ValueError("prompts must be LEFT-padded: the last column of attention_mask must be all True")
            if bool((real[:, 1:].int() < real[:, :-1].int()).any()):
                raise ValueError("prompts must be LEFT-padded: attention_mask must be False...False True...True")
            has_padding = not bool(real.all())
        else:
            real, has_padding = None, False

        if has_padding:
            positions = (real.long().cumsum(-1) - 1).masked_fill_(~real, 0)
            causal = torch.ones(T, T, device=self.device, dtype=torch.bool).tril_()
            # A pad query may see itself, so no row is fully masked (which would make NaNs that leak
            # into the pad positions' K/V); real queries never see pad keys.
            eye = torch.eye(T, device=self.device, dtype=torch.bool)
            attn_mask = (causal & (real[:, None, None, :] | eye)).contiguous()
            self._key_bias.zero_()
            self._key_bias[:, 0, 0, :T].masked_fill_(~real, float("-inf"))
        else:
            positions = torch.arange(T, device=self.device).expand(B, T)
            attn_mask = None
        cos = self._cos[positions][:, None]  # [B, 1, T, rot]
        sin = self._sin_signed[positions][:, None]

        h = F.embedding(input_ids, self.embed)
        for i, layer in enumerate(self.layers):
            x = self._norm(h, layer.ln1)
            qkv = layer.qkv(x)
            q = qkv[..., : self.q_size].view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = qkv[..., self.q_size : self.q_size + self.kv_size].view(B, T, self.n_kv_heads, self.head_dim)
            v = qkv[..., self.q_size + self.kv_size :].view(B, T, self.n_kv_heads, self.head_dim)
            q = self._rope(q, cos, sin)
            k = self._rope(k.transpose(1, 2), cos, sin)
            self.k_cache[i, :, :, :T] = k
            self.v_cache[i, :, :, :T] = v.transpose(1, 2)
            a = F.scaled_dot_product_attention(
                q, k, self.v_cache[i, :, :, :T], attn_mask=attn_mask, is_causal=attn_mask is None,
                enable_gqa=self._gqa,
            )
            h = h + layer.o(a.transpose(1, 2).reshape(B, T, self.q_size))
            gate, up = layer.gate_up(self._norm(h, layer.ln2)).chunk(2, dim=-1)
            h = h + layer.down(F.silu(gate) * up)
        self._next_pos.copy_(positions[:, -1] + 1)
        self._has_padding = has_padding
        self.length = T
        return self._logits(h[:, -1])

    # ------------------------------------------------------------------ step
    @torch.inference_mode()
    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Feed one token per row [B]; returns next-token logits [B, V] fp32."""
        if self.length == 0:
            raise RuntimeError("call prefill() before step()")
        L = self.length
        if L >= self.max_len:
            raise RuntimeError(
                f"KV cache full ({self.max_len} positions): reset() and prefill() the most recent tokens"
            )
        B = self.batch_size
        if next_ids.shape != (B,):
            raise ValueError(f"next_ids must be [{B}], got {tuple(next_ids.shape)}")
        cos = self._cos[self._next_pos].view(B, 1, 1, self.rot_dim)
        sin = self._sin_signed[self._next_pos].view(B, 1, 1, self.rot_dim)
        key_bias = self._key_bias[:, :, :, : L + 1] if self._has_padding else None
        nq, nkv, D = self.n_heads, self.n_kv_heads, self.head_dim

        h = F.embedding(next_ids.to(self.device), self.embed)  # [B, H]
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(self._norm(h, layer.ln1))
            # q and k rotate together: one RoPE pass over [B, nq + nkv, 1, D].
            qk = self._rope(qkv[:, : self.q_size + self.kv_size].view(B, nq + nkv, 1, D), cos, sin)
            self.k_cache[i, :, :, L] = qk[:, nq:, 0]
            self.v_cache[i, :, :, L] = qkv[:, self.q_size + self.kv_size :].view(B, nkv, D)
            a = F.scaled_dot_product_attention(
                qk[:, :nq], self.k_cache[i, :, :, : L + 1], self.v_cache[i, :, :, : L + 1],
                attn_mask=key_bias, enable_gqa=self._gqa,
            )
            h = h + layer.o(a.view(B, self.q_size))
            gate, up = layer.gate_up(self._norm(h, layer.ln2)).chunk(2, dim=-1)
            h = h + layer.down(F.silu(gate) * up)
        self._next_pos += 1
        self.length = L + 1
        return self._logits(h)
