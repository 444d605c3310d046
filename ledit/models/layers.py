"""DiT's building blocks with DiT's module and parameter names, so official checkpoints load unchanged.

Differences from facebookresearch/DiT: attention takes the explicit (h, w) token grid and runs through
``ledit.ops.scan_attention`` (full or scanned-causal per block), can rotate q/k with 2D RoPE, and takes the
softmax scale per call; a block can be built with a locality branch (``local_conv``) that runs first.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn as nn

from ledit.models.packing import op_grid, per_token
from ledit.models.rope import apply_rope
from ledit.ops import scan_attention

# A softmax scale is None (1/sqrt(head_dim)), one float for the whole batch, or a (B,) tensor (e.g. chosen per
# sample from its timestep; (n_images,) in a packed batch), which is folded into q because scan_attention takes a
# single float.
SoftmaxScale = Union[None, float, torch.Tensor]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of (B, N, D) tokens by shift and scale already shaped to broadcast (``per_token``)."""
    return x * (1 + scale) + shift


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches of a (B, C, H, W) latent to (B, N, D) tokens in raster order."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """A packed batch's (T, C, p, p) patches -> (1, T, D) tokens: the same map as ``forward``, as one matmul."""
        weight = self.proj.weight.flatten(1)
        return torch.nn.functional.linear(patches.flatten(1), weight, self.proj.bias).unsqueeze(0)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the (possibly fractional) timestep, then a 2-layer MLP (DiT / GLIDE)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """(B,) timesteps -> (B, dim) features [cos(t * f_i), sin(t * f_i)], f_i = max_period^(-i / (dim // 2))."""
        half = dim // 2
        exponents = torch.arange(half, dtype=torch.float32, device=t.device) / half
        angles = t.float()[:, None] * torch.exp(-math.log(max_period) * exponents)[None]
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        if dim % 2:
            features = torch.cat([features, torch.zeros_like(features[:, :1])], dim=-1)
        return features

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class-label embedding; index ``num_classes`` is the null label that classifier-free guidance drops to."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        has_null_label = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + has_null_label, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, force_drop_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: Optional[torch.Tensor] = None):
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2, named like timm's Mlp as DiT uses it."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention over an (h, w) token grid: full (``scan="full"``) or scanned-causal.

    Named like timm's Attention (``qkv``, ``proj``) as DiT uses it. q, k and v stay in (B, N, H, D), the layout
    ``scan_attention`` and its kernels take, so no transposes are needed. ``grid`` is the (h, w) token grid, or
    a packed batch's ``Packing`` (x is then (1, T, dim)).
    """

    def __init__(self, dim: int, num_heads: int, scan: str = "full"):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scan = scan
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, scan={self.scan!r}"

    def forward(self, x, grid, softmax_scale: SoftmaxScale = None, rope=None):
        batch, n_tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, n_tokens, 3, self.num_heads, self.head_dim).unbind(2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if isinstance(softmax_scale, torch.Tensor):
            # Per-sample (per-image) scale: q * (s * sqrt(D)) with the default 1/sqrt(D) gives logits * s exactly.
            factor = softmax_scale.to(torch.float32) * math.sqrt(self.head_dim)
            q = q * per_token(factor.to(q.dtype)[:, None], grid).unsqueeze(-1)
            softmax_scale = None
        out = scan_attention(q, k, v, op_grid(grid), scan=self.scan, softmax_scale=softmax_scale)
        return self.proj(out.reshape(batch, n_tokens, dim))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block with attention under ``scan`` ("full" in DiT).

    ``local_conv``, when given, is a module ``(x, c, grid, dilation) -> x`` run first, on the residual stream
    (LEDiT's ``locality_placement="every_block"``). It is registered last, so DiT's state-dict keys come first
    and are unchanged.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, scan: str = "full",
                 local_conv: Optional[nn.Module] = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, scan=scan)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))
        self.local_conv = local_conv

    def forward(self, x, c, grid, softmax_scale: SoftmaxScale = None, rope=None, dilation: int = 1):
        if self.local_conv is not None:
            x = self.local_conv(x, c, grid, dilation)
        modulation = per_token(self.adaLN_modulation(c), grid)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=-1)
        attn_in = modulate(self.norm1(x), shift_msa, scale_msa)
        x = x + gate_msa * self.attn(attn_in, grid, softmax_scale, rope)
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map from tokens to p*p*out_channels patch values."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x, c, grid=None):
        shift, scale = per_token(self.adaLN_modulation(c), grid).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))
