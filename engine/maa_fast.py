"""MAA's forward pass re-laid out for CPUs (`FastCPUForward`) and the precisions it runs at: the scorer
(`engine.scorer`) uses it on a CPU unless the exact model is asked for.

This module must never import Qt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from audiobox_aesthetics.model.aes import AesMultiOutput
from torch import nn

from engine.cpu import cpu_flags, int8_vnni, native_bf16
from engine.quantized import BF16Linear, FloatLinear, Int8Linear, int8_weights_available

__all__ = ["FAST_CPU_PRECISIONS", "FastCPUForward", "default_fast_cpu_precision", "fast_cpu_unsupported"]

# FastCPUForward precisions. "bf16": every matmul (convolutions, encoder linears, attention) in bf16 with
# float32 accumulation; "int8": encoder linears int8 (fbgemm), convolutions bf16 (float32 on CPUs without
# bf16 instructions), attention float32;
# "float32": the re-laid-out computation at full precision (tests hold it to the package's forward).
FAST_CPU_PRECISIONS = ("bf16", "int8", "float32")


def default_fast_cpu_precision() -> str:
    """The fast path's precision on this CPU, chosen by measurement (BENCHMARKS.md, "MAA scorer").

    With AMX, bf16 matmuls run ~8× float32 (int8 dynamic quantization only ~3×) and bf16 is the
    more accurate of the two; without AMX (e.g. AVX512-BF16 on AMD Zen 4) bf16 everywhere was only
    ≈ 1.5× float32 and the int8 encoder ≈ 2×; without any bf16 instructions (most laptops) bf16 is
    emulated and slower than float32, and the int8 encoder with float32 convolutions 1.7–1.9×.
    """
    return "bf16" if "amx_bf16" in cpu_flags() else "int8"


def fast_cpu_unsupported(model: AesMultiOutput, precision: str | None = None) -> str | None:
    """Why ``FastCPUForward(model, precision)`` cannot run (None when it can); ``None``: this CPU's default."""
    precision = precision or default_fast_cpu_precision()
    cfg = model.wavlm_model.cfg
    checks = (
        (precision in FAST_CPU_PRECISIONS, f"unknown precision {precision!r} (choose from {FAST_CPU_PRECISIONS})"),
        (precision != "int8" or int8_weights_available(), "this torch build lacks the fbgemm int8 kernels"),
        (cfg.extractor_mode == "default" and not cfg.conv_bias, "the convolutions are not WavLM's default ones"),
        (not cfg.layer_norm_first and cfg.activation_fn == "gelu", "the encoder is not post-LN with GELU"),
        (cfg.relative_position_embedding and cfg.gru_rel_pos, "the attention has no gated relative position bias"),
        (model.use_weighted_layer_sum and model.nth_layer == cfg.encoder_layers + 1,
         "the heads do not read a weighted sum of all layers"),
        (next(model.parameters()).dtype == torch.float32, "the weights are not float32"),
    )
    return next((reason for ok, reason in checks if not ok), None)


def _gelu_(x: torch.Tensor) -> torch.Tensor:
    """GELU in place on a fresh intermediate: a new tens-of-MB output costs more in page faults than the
    GELU itself (measured 47 ms vs 8 ms on a 32000×512 tensor)."""
    return torch.ops.aten.gelu_(x)


class _StridedConv:
    """A bias-free strided convolution over time-major frames, (B, T, in) -> (B, T_out, out), as matmuls.

    float32: the kernel's taps in chunks of `stride` consecutive ones, whose rows (one per output frame)
    do not overlap, so BLAS reads them in place — no im2col copy (the float32 feature extractor measured
    1.15× faster). bf16: one matmul over copied rows of all k frames (im2col), the sum rounded once; the
    in-place chunks summed in bf16 were no faster there and a little less accurate."""

    __slots__ = ("kernel", "stride", "dtype", "weights")

    def __init__(self, conv: nn.Conv1d, dtype: torch.dtype):
        self.kernel, self.stride, self.dtype = conv.kernel_size[0], conv.stride[0], dtype
        w = conv.weight.detach()  # (out, in, k)
        if dtype == torch.bfloat16:  # rows of k consecutive frames: (out, k·in), as F.linear wants it
            self.weights = (w.permute(0, 2, 1).reshape(w.shape[0], -1).to(dtype).contiguous(),)
        else:  # chunk g: taps g·stride … g·stride + stride − 1 as one (taps·in, out) matrix
            taps = w.permute(2, 1, 0)  # (k, in, out)
            self.weights = tuple(taps[g : g + self.stride].reshape(-1, w.shape[0]).to(dtype).contiguous()
                                 for g in range(0, self.kernel, self.stride))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, channels = x.shape
        out_frames = (frames - self.kernel) // self.stride + 1
        if self.dtype == torch.bfloat16:
            rows = x.as_strided((batch, out_frames, self.kernel * channels), (frames * channels, self.stride * channels, 1))
            return F.linear(rows.contiguous(), self.weights[0])
        y = x.new_empty(batch, out_frames, self.weights[0].shape[1])
        for b in range(batch):
            start = x[b].storage_offset()
            for g, weight in enumerate(self.weights):
                rows = x.as_strided((out_frames, weight.shape[0]), (self.stride * channels, 1),
                                    start + g * self.stride * channels)
                if g == 0:
                    torch.mm(rows, weight, out=y[b])
                else:
                    y[b].addmm_(rows, weight)
        return y


class FastCPUForward:
    """MAA's forward pass for CPUs: the package's computation, re-laid out and at lower precision.

    * the strided convolutions 2–7 become matmuls over time-major frames (``_StridedConv``),
      which also drops the channel-major ↔ time-major transposes; bf16 in both low precisions where the CPU has bf16
      instructions (int8 there was 8× less accurate), and the activations between them stay bf16;
    * the 1-channel first convolution and its GroupNorm become one float32 matmul over the framed
      waveform (the statistics come from the frames' Gram matrix); the positional convolution follows the others;
    * ``precision="bf16"`` (the default on CPUs with AMX): the encoder's linears and attention in bf16;
      ``"int8"`` (the default elsewhere): the encoder's linears as int8 fbgemm matmuls (weights per
      output channel, activations quantized per window and call), attention in float32, and the
      convolutions float32 on CPUs without bf16 instructions (emulated bf16 is several times slower);
    * layer norms, the residual stream, pooling and the heads stay float32.

    ``precision="float32"`` (or ``low_precision=False``) runs the same re-laid-out computation in
    float32 (tests hold it to the package's forward). Same inputs and outputs as
    ``AesMultiOutput.forward`` (eval mode). A snapshot of the weights: build a new one if they change.
    Agreement with the exact path was measured with random weights (``benchmarks/bench_maa.py``,
    BENCHMARKS.md); recheck it with the real weights once installed. ``fast_cpu_unsupported(model)``
    says which models it cannot run.
    """

    def __init__(self, model: AesMultiOutput, low_precision: bool = True, precision: str | None = None):
        if precision is None:
            precision = default_fast_cpu_precision() if low_precision else "float32"
        reason = fast_cpu_unsupported(model, precision)
        if reason is not None:
            raise ValueError(f"fast CPU path unavailable: {reason}")
        self.precision = precision
        if precision == "int8":
            reduce_range = not int8_vnni()

            def linear(weight, bias):
                return Int8Linear(weight, bias, reduce_range)
        else:
            linear = BF16Linear if precision == "bf16" else FloatLinear
        # bf16 convolutions only where the CPU has bf16 dot-product instructions: emulated, a bf16 matmul
        # ran 4× (oneDNN capped at AVX-512) to 10× (AVX2) slower than float32, which made the int8 path
        # 5× slower than the exact model on such CPUs (BENCHMARKS.md, "CPUs without bf16 instructions").
        bf16_convs = precision == "bf16" or (precision == "int8" and native_bf16())
        self.conv_dtype = torch.bfloat16 if bf16_convs else torch.float32
        self.model = model
        wavlm = model.wavlm_model
        self.wavlm = wavlm
        with torch.no_grad():
            blocks = list(wavlm.feature_extractor.conv_layers)
            first = blocks[0][0]
            self.frame, self.hop = first.kernel_size[0], first.stride[0]
            self.first_weight = first.weight.detach().reshape(first.out_channels, -1).t().contiguous()  # (k, C)
            self.first_norm = blocks[0][2]  # GroupNorm with one group per channel: normalises over time
            self.convs = [_StridedConv(block[0], self.conv_dtype) for block in blocks[1:]]
            proj = wavlm.post_extract_proj
            self.post_proj = None if proj is None else linear(proj.weight, proj.bias)
            pos = wavlm.encoder.pos_conv[0]
            self.pos_weight = torch._weight_norm(pos.weight_v, pos.weight_g, 2).detach().to(self.conv_dtype)
            self.pos_bias = pos.bias.detach().to(self.conv_dtype)
            self.pos_padding, self.pos_groups = pos.padding[0], pos.groups
            self.pos_remove = wavlm.encoder.pos_conv[1].remove
            self.layers = []
            for layer in wavlm.encoder.layers[: model.nth_layer - 1]:
                attn = layer.self_attn
                qkv = (attn.q_proj, attn.k_proj, attn.v_proj)
                self.layers.append((
                    layer,
                    linear(torch.cat([m.weight for m in qkv]), torch.cat([m.bias for m in qkv])),
                    linear(attn.out_proj.weight, attn.out_proj.bias),
                    linear(layer.fc1.weight, layer.fc1.bias),
                    linear(layer.fc2.weight, layer.fc2.bias),
                ))

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, frames, channels) float32: the convolutional feature extractor, time-major."""
        # First convolution + GroupNorm (one group per channel: statistics over time). The convolution is
        # frames @ W, so each channel's mean and variance over time follow from the frames' mean and
        # k×k Gram matrix (float64), and the normalisation folds into the weights: one matmul.
        frames = wav.unfold(-1, self.frame, self.hop)  # (B, T, k), a view
        frames64 = frames.double()
        weight = self.first_weight.double()  # (k, C)
        mean = frames64.mean(dim=1) @ weight  # (B, C)
        gram = frames64.transpose(1, 2) @ frames64 / frames.shape[1]  # (B, k, k)
        var = ((gram @ weight) * weight).sum(dim=1) - mean.square()
        norm = self.first_norm
        scale = torch.rsqrt(var.clamp(min=0) + norm.eps) * norm.weight.double()  # (B, C)
        shift = (norm.bias.double() - mean * scale).unsqueeze(1)  # (B, 1, C)
        x = _gelu_(torch.baddbmm(shift.float(), frames, (weight.unsqueeze(0) * scale.unsqueeze(1)).float()))
        x = x.to(self.conv_dtype)
        for conv in self.convs:
            x = _gelu_(conv(x))
        return x.float()

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        model, wavlm = self.model, self.wavlm
        wav = batch["wav"].squeeze(1)
        padding_mask = ~batch["mask"].squeeze(1) if "mask" in batch else torch.zeros_like(wav, dtype=torch.bool)
        if wavlm.cfg.normalize:
            wav = F.layer_norm(wav, wav.shape)
        features = wavlm.layer_norm(self._features(wav))
        padding_mask = wavlm.forward_padding_mask(features, padding_mask)
        x = features if self.post_proj is None else self.post_proj(features).float()
        x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        pos = F.conv1d(x.transpose(1, 2).to(self.pos_weight.dtype).contiguous(), self.pos_weight, self.pos_bias,
                       padding=self.pos_padding, groups=self.pos_groups)
        if self.pos_remove:
            pos = pos[:, :, : -self.pos_remove]
        x = wavlm.encoder.layer_norm(x + _gelu_(pos.float()).transpose(1, 2))
        results = [x]
        batch_size, frames, dim = x.shape
        # padded frames are never attended to: -inf added to their attention logits
        key_bias = None
        if padding_mask.any():
            key_bias = torch.zeros(batch_size, 1, 1, frames).masked_fill(
                padding_mask.view(batch_size, 1, 1, frames), float("-inf"))
        position_bias = None
        for layer, qkv_proj, out_proj, fc1, fc2 in self.layers:
            attn = layer.self_attn
            heads = attn.num_heads
            if position_bias is None:  # computed by the first layer, shared by all (as in WavLM)
                position_bias = attn.compute_bias(frames, frames).contiguous()  # (H, T, T); a permuted view

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(batch_size, frames, heads, dim // heads).transpose(1, 2)  # (B, H, T, d)

            # WavLM's gated relative position bias (gru_rel_pos), as MultiheadAttention.forward computes it
            gates = attn.grep_linear(split(x)).view(batch_size, heads, frames, 2, 4).sum(-1)
            gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)
            gate = gate_a * (gate_b * attn.grep_a - 1.0) + 2.0  # (B, H, T, 1)
            q, k, v = qkv_proj(x).chunk(3, dim=-1)  # float32, or bf16 with precision="bf16"
            bias = gate * position_bias if key_bias is None else torch.addcmul(key_bias, gate, position_bias)
            out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=bias.to(q.dtype))
            x = layer.self_attn_layer_norm(x + out_proj(out.transpose(1, 2).reshape(batch_size, frames, dim)).float())
            x = layer.final_layer_norm(x + fc2(_gelu_(fc1(x))).float())
            results.append(x)
        stacked = torch.stack(results, dim=-1)  # (B, T, C, L)
        keep = (~padding_mask).unsqueeze(-1).to(stacked.dtype)
        preds = {}
        for name in model.axes_name:
            if model.use_weighted_layer_sum:
                embed = torch.einsum("btcl,l->btc", stacked, F.softmax(model.layer_weights[name], dim=-1))
            else:
                embed = stacked[..., -1]
            embed = (embed * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
            if model.normalize_embed:
                embed = F.normalize(embed, dim=-1)
            preds[name] = model.proj_layer[name](embed).squeeze(-1)
        return preds
