"""The DiT backbone shared by ``DiT`` (the baselines) and ``LEDiT``: embedders, adaLN-Zero blocks, final layer.

The blocks are built complete: each block's attention scan and its optional locality branch are constructor
arguments (``scans``, ``block_locality``), never patched in afterwards. Subclasses differ only in how tokens get
position, through a few small overridable methods:
``embed_tokens`` (after patchify: add a PE, or run the locality conv), ``rope_tables`` (2D RoPE or None),
``softmax_scale`` (per block, e.g. Jin et al. scaling at other token counts) and ``draw_dilation``
(multi-dilation training). The token grid (h, w) is carried explicitly, so any H x W divisible by the patch
size works, square or not. Inference-only add-ons (``ledit.models.inference``) are read by those hooks from
``model.inference_options``.

A packed batch of images of different sizes (``ledit.models.packing``) runs through the same blocks: the hooks
then get a ``Packing`` in place of the (h, w) grid, conditioning is per image, and the result equals running each
image on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Optional, Union

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ledit.models.configs import SIZE_ARGUMENTS, name_for_dimensions
from ledit.models.inference import (
    NUM_TRAIN_TIMESTEPS,
    InferenceOptions,
    check_inference_options,
    default_inference_options,
    updated_options,
)
from ledit.models.layers import DiTBlock, FinalLayer, LabelEmbedder, PatchEmbed, SoftmaxScale, TimestepEmbedder
from ledit.models.packing import Packing, check_grids, host_grids, pack, token_timesteps, unpack
from ledit.models.scaling import temperature_softmax_scale
from ledit.ops import SCANS

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _json_safe(value):
    return [_json_safe(v) for v in value] if isinstance(value, (tuple, list)) else value


def _check_input_size(input_size, patch_size) -> tuple[int, int]:
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"input_size must be a positive int or an (H, W) pair of them, got {input_size!r}")
    if any(s % patch_size for s in size):
        raise ValueError(f"input_size={input_size!r} must be divisible by patch_size={patch_size}")
    return size


class DiffusionTransformer(nn.Module):
    """DiT's class-conditional transformer; see ``ledit.models.DiT`` and ``ledit.models.LEDiT``."""

    family = "DiffusionTransformer"

    def __init__(
        self,
        input_size=32,
        patch_size=2,
        in_channels=4,
        hidden_size=1152,
        depth=28,
        num_heads=16,
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        num_classes=1000,
        learn_sigma=True,
        attention_scaling=False,
        config_kwargs: Optional[dict] = None,
        *,
        scans: Optional[Sequence[str]] = None,
        block_locality: Optional[Callable[[int], nn.Module]] = None,
    ):
        """DiT's arguments, then: ``attention_scaling`` (the default inference temperature, see
        ``softmax_scale``), ``config_kwargs`` (what ``config`` reports), ``scans`` (each block's attention scan;
        default "full" everywhere, as DiT) and ``block_locality`` (a factory ``hidden_size -> module`` giving
        every block a locality branch; default none, as DiT)."""
        super().__init__()
        if not isinstance(patch_size, int) or patch_size <= 0:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
        input_hw = _check_input_size(input_size, patch_size)
        if num_heads <= 0 or hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        head_dim = hidden_size // num_heads
        if head_dim % 8 != 0:
            raise ValueError(
                f"head dim hidden_size/num_heads = {hidden_size}/{num_heads} = {head_dim} must be a multiple of 8 "
                f"(the attention kernels' requirement); change hidden_size or num_heads"
            )
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        scans = ("full",) * depth if scans is None else tuple(scans)
        if len(scans) != depth:
            raise ValueError(f"scans gives {len(scans)} blocks' scans for depth={depth}; give one per block")
        unknown = sorted(set(scans) - set(SCANS))
        if unknown:
            raise ValueError(f"scans holds unknown scans {unknown}; valid scans: {', '.join(SCANS)}")
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.learn_sigma = learn_sigma
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.num_classes = num_classes
        self.train_grid = (input_hw[0] // patch_size, input_hw[1] // patch_size)
        self.attention_scaling = attention_scaling
        # attention_scaling=True: Jin et al. on every layer at inference; False: no temperature (the defaults).
        self.inference_options = default_inference_options(attention_scaling)
        self.grad_checkpointing = False
        self._config_kwargs = {k: _json_safe(v) for k, v in (config_kwargs or {}).items()}

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        self.blocks = nn.ModuleList([
            DiTBlock(hidden_size, num_heads, mlp_ratio, scan=scan,
                     local_conv=block_locality(hidden_size) if block_locality is not None else None)
            for scan in scans
        ])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        """DiT's init: xavier Linears, patch embed like a Linear, N(0, 0.02) embedders, adaLN-Zero (every
        ``adaLN_modulation``'s last Linear, a block's locality branch included), zero output."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        weight = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for module in self.modules():
            modulation = getattr(module, "adaLN_modulation", None)
            if modulation is not None:
                nn.init.zeros_(modulation[-1].weight)
                nn.init.zeros_(modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # ----------------------------------------------------------------------------------------------------------
    # How tokens get position: overridden by the subclasses; they read the inference add-ons at inference.

    # Each hook gets ``grid``, the (h, w) token grid of a batch, or the ``Packing`` of a packed batch (whose x is
    # then its (T, C, p, p) patches, c and t per image, and whose tokens are (1, T, D)).

    def embed_tokens(self, x: torch.Tensor, c: torch.Tensor, grid: tuple[int, int], dilation: int,
                     t: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) latents -> (B, N, D) tokens entering block 0 (c: the (B, D) condition, t: (B,) steps)."""
        return self.patch_tokens(x, grid)

    def patch_tokens(self, x: torch.Tensor, grid) -> torch.Tensor:
        """The patch embedding of a batch (B, C, H, W) or of a packed batch's patches (T, C, p, p)."""
        return self.x_embedder.embed_patches(x) if isinstance(grid, Packing) else self.x_embedder(x)

    def rope_tables(self, grid, t) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """(cos, sin) of shape (N, head_dim), or (B, N, head_dim) per sample, to rotate q and k; None: no RoPE."""
        return None

    def packing_refusal(self) -> Optional[str]:
        """Why this model cannot run a packed batch, or None when it can."""
        return None

    def softmax_scale(self, block_index: int, grid, t) -> SoftmaxScale:
        """Block ``block_index``'s softmax scale: None (1/sqrt(head_dim)), a float, or a (B,) tensor.

        At inference, the temperature rule of ``inference_options`` for the block's kind (full or causal; equal
        to 1/sqrt(d) at the training token count); with ``temperature_until`` > 0, a (B,) tensor holding that
        scale for the samples with t/T >= temperature_until and 1/sqrt(d) for the others. None in training.
        """
        if self.training:
            return None
        options = self.inference_options
        full = self.blocks[block_index].attn.scan == "full"
        rule = options.temperature_full if full else options.temperature_causal
        plain = 1.0 / math.sqrt(self.head_dim)
        if isinstance(grid, Packing):  # one scale per image, from its own token count
            n_train = math.prod(self.train_grid)
            per_image = [temperature_softmax_scale(rule, n_train, h * w, self.head_dim) for h, w in grid.host_grids]
            scale = per_image[0] if len(set(per_image)) == 1 else torch.tensor(
                [plain if s is None else s for s in per_image], device=t.device)
        else:
            scale = temperature_softmax_scale(rule, math.prod(self.train_grid), math.prod(grid), self.head_dim)
        if scale is None or options.temperature_until <= 0:
            return scale
        early = t >= options.temperature_until * NUM_TRAIN_TIMESTEPS
        return torch.where(early, scale, plain).to(torch.float32)

    def draw_dilation(self) -> int:
        """Dilation of the locality convolution for this forward (1 unless multi-dilation training)."""
        return 1

    def inference_capabilities(self) -> dict:
        """What the inference options may touch: ``rope`` (bool) and ``stem_locality`` (str or None)."""
        return {}

    # ----------------------------------------------------------------------------------------------------------

    def set_inference_options(self, options: Optional[InferenceOptions] = None, **fields) -> InferenceOptions:
        """Validate and set the inference-only add-ons; returns the new ``model.inference_options``.

        ``options`` (or, when None, the current options) with ``fields`` replaced, e.g.
        ``model.set_inference_options(temperature_full="fitv2-log")`` changes one field and keeps the rest.
        They apply in eval mode only; a training forward ignores them. Options that do not apply to this model
        (``rope_dynamic`` without RoPE, ``stem_dilation`` > 1 without a stem locality conv) are an error.
        """
        new = updated_options(self.inference_options, options, fields)
        self.inference_options = check_inference_options(new, family=self.family, **self.inference_capabilities())
        return self.inference_options

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them (less memory, ~1/3 more time)."""
        self.grad_checkpointing = bool(enabled)

    @property
    def config(self) -> dict:
        """JSON-safe ``{"name": ..., **kwargs}``; ``build_model(**model.config)`` rebuilds this model."""
        kwargs = dict(self._config_kwargs)
        sizes = {key: kwargs[key] for key in SIZE_ARGUMENTS}
        name = name_for_dimensions(self.family, **sizes)
        if name is None:
            return {"name": self.family, **kwargs}
        return {"name": name, **{k: v for k, v in kwargs.items() if k not in SIZE_ARGUMENTS}}

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) token grid of an H x W latent."""
        return height // self.patch_size, width // self.patch_size

    def check_inputs(self, x, t, y) -> tuple[int, int]:
        """Validate forward's arguments; returns the token grid."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a (B, C, H, W) latent tensor, got {got}")
        batch, channels, height, width = x.shape
        self._check_dtype(x, "x")
        if channels != self.in_channels:
            raise ValueError(f"x has {channels} channels but the model takes in_channels={self.in_channels}")
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"x's height x width = {height} x {width} must both be divisible by patch_size={self.patch_size}"
            )
        self._check_conditions(t, y, batch, "(B,)")
        return self.token_grid(height, width)

    def _check_dtype(self, x: torch.Tensor, name: str) -> None:
        if x.dtype not in INPUT_DTYPES:
            raise TypeError(f"{name}.dtype={x.dtype} is not supported; use float32, float16 or bfloat16")
        param_dtype = self.x_embedder.proj.weight.dtype
        if x.dtype != param_dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"{name}.dtype={x.dtype} but the model's parameters are {param_dtype}; cast {name} "
                f"({name}.to({param_dtype})), cast the model (model.to(dtype)), or run under torch.autocast"
            )

    def _check_conditions(self, t, y, count: int, shape: str) -> None:
        for name, value in (("t", t), ("y", y)):
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (count,):
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"{name} must be a tensor of shape {shape} = ({count},), got {got}")
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
        if not torch.compiler.is_compiling() and y.numel():
            has_null = self.y_embedder.dropout_prob > 0
            top = self.num_classes if has_null else self.num_classes - 1
            low, high = torch.stack([y.min(), y.max()]).tolist()  # one device sync, not two
            if low < 0 or high > top:
                null = f" ({self.num_classes} is the null label of classifier-free guidance)" if has_null else ""
                bad = low if low < 0 else high
                raise ValueError(f"y holds class label {bad}, outside [0, {top}]{null}")

    def check_packed_inputs(self, x, t, y, grids) -> Packing:
        """Validate a packed forward's arguments (x the (T, C, p, p) patches); returns the batch's ``Packing``."""
        refusal = self.packing_refusal()
        if refusal is not None:
            raise ValueError(f"this {self.family} cannot run a packed batch: {refusal}")
        grids = check_grids(grids)
        p = self.patch_size
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[2:] != (p, p):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"a packed x must be the (T, C, {p}, {p}) patches of its images (see "
                             f"ledit.models.packing.pack), got {got}")
        self._check_dtype(x, "x")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x has {x.shape[1]} channels but the model takes in_channels={self.in_channels}")
        if grids.device.type == "cpu" and not torch.compiler.is_compiling():
            if int(grids.min()) < 1:
                raise ValueError(f"grids holds an image of grid {tuple(grids[(grids < 1).any(1)][0].tolist())}; "
                                 "every h and w must be >= 1")
            total = int(grids.prod(1).sum())
            if total != x.shape[0]:
                raise ValueError(f"grids hold {total} tokens (sum of h*w over {grids.shape[0]} images) but x has "
                                 f"{x.shape[0]} patches; they must match")
        self._check_conditions(t, y, grids.shape[0], "(n_images,)")
        return Packing(grids, x.shape[0], x.device)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, h*w, p*p*C) patch values -> (B, C, h*p, w*p)."""
        (h, w), p, c = grid, self.patch_size, self.out_channels
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x, t: torch.Tensor, y: torch.Tensor, grids: Optional[torch.Tensor] = None):
        """x: (B, C, H, W) latents with H, W divisible by patch_size; t: (B,) timesteps; y: (B,) class labels.

        Returns (B, out_channels, H, W): predicted noise, then (learn_sigma) the variance interpolation values.

        A packed batch of n images of different sizes (``ledit.models.packing``), answered in kind: x a list of n
        latents (C, H_i, W_i) -> a list of (out_channels, H_i, W_i); or x the (T, C, p, p) patches with ``grids``
        the (n, 2) token grids -> (T, out_channels, p, p). t and y are then (n,), one per image. Each image's
        output equals its own forward's.
        """
        if isinstance(x, (list, tuple)):
            return self._forward_list(x, t, y, grids, self.forward)
        if grids is not None:
            packing = self.check_packed_inputs(x, t, y, grids)
            out = self._denoise(x, t, y, packing)
            p, c = self.patch_size, self.out_channels
            return out.reshape(packing.total_tokens, p, p, c).permute(0, 3, 1, 2)
        grid = self.check_inputs(x, t, y)
        return self.unpatchify(self._denoise(x, t, y, grid), grid)

    def _denoise(self, x, t, y, grid) -> torch.Tensor:
        """The transformer from latents (or a packed batch's patches) to the final layer's patch values."""
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        dilation = self.draw_dilation()
        tokens = self.embed_tokens(x, c, grid, dilation, t)
        rope = self.rope_tables(grid, t)
        for index, block in enumerate(self.blocks):
            args = (tokens, c, grid, self.softmax_scale(index, grid, t), rope, dilation)
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, *args, use_reentrant=False)
            else:
                tokens = block(*args)
        return self.final_layer(tokens, c, grid)

    def _forward_list(self, latents, t, y, grids, forward, **kwargs) -> list[torch.Tensor]:
        """``forward`` (``self.forward`` or ``self.forward_with_cfg``) of a list of latents, packed and unpacked."""
        if grids is not None:
            raise ValueError("grids describe a packed tensor's images; a list of latents carries its own sizes, so "
                             "pass grids=None")
        if not latents:
            raise ValueError("x is an empty list; a packed batch needs at least one latent (C, H, W)")
        for i, latent in enumerate(latents):
            if not isinstance(latent, torch.Tensor) or latent.dim() != 3:
                got = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
                raise ValueError(f"x[{i}] must be a (C, H, W) latent, got {got}")
            if latent.shape[1] % self.patch_size or latent.shape[2] % self.patch_size:
                raise ValueError(f"x[{i}]'s height x width = {latent.shape[1]} x {latent.shape[2]} must both be "
                                 f"divisible by patch_size={self.patch_size}")
            if (latent.dtype, latent.device) != (latents[0].dtype, latents[0].device):
                raise ValueError(f"x[{i}] is {latent.dtype} on {latent.device} but x[0] is {latents[0].dtype} on "
                                 f"{latents[0].device}; the latents of a packed batch share a dtype and a device")
        packed, grids = pack(latents, self.patch_size)
        return unpack(forward(packed, t, y, grids=grids, **kwargs), grids)

    def forward_with_cfg(self, x, t, y, cfg_scale: Union[float, torch.Tensor], cfg_channels: Union[int, str] = 3,
                         grids: Optional[torch.Tensor] = None):
        """DiT's classifier-free guidance: the batch's first half is run with labels y and the second half's labels.

        x's second half is ignored (replaced by its first half), as in DiT. Guidance applies to the first
        ``cfg_channels`` output channels (DiT's default 3, kept for exact reproducibility of its numbers) or to
        all noise channels with ``cfg_channels="all"``; the rest (the learned variance) is the model's own.
        ``cfg_scale`` is one number, or a tensor of one per sample of the first half.

        A packed batch (see ``forward``) doubles its images the same way: its second n/2 images repeat the first
        n/2 (their grids equal), with the null labels.
        """
        if cfg_channels == "all":
            cfg_channels = self.in_channels
        if not isinstance(cfg_channels, int) or not 1 <= cfg_channels <= self.in_channels:
            raise ValueError(f"cfg_channels must be an int in [1, {self.in_channels}] or 'all', got {cfg_channels!r}")
        if isinstance(x, (list, tuple)):
            return self._forward_list(x, t, y, grids, self.forward_with_cfg, cfg_scale=cfg_scale,
                                      cfg_channels=cfg_channels)
        samples = x.shape[0] if grids is None else check_grids(grids).shape[0]
        if samples % 2:
            what = "batch" if grids is None else "packed batch of images"
            raise ValueError(f"forward_with_cfg needs an even {what} (conditional + unconditional), got {samples}")
        if grids is not None and grids.device.type == "cpu" and not torch.equal(*grids.chunk(2)):
            raise ValueError(f"forward_with_cfg: a packed batch's second half of images must repeat the first "
                             f"(grids {host_grids(grids)})")
        half = x[: x.shape[0] // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y, grids=grids)
        eps, rest = out[:, :cfg_channels], out[:, cfg_channels:]
        cond_eps, uncond_eps = eps.chunk(2, dim=0)
        if isinstance(cfg_scale, torch.Tensor):
            if grids is not None:  # per image -> per token of the first half
                cfg_scale = token_timesteps(cfg_scale, grids[: samples // 2].to(cfg_scale.device), half.shape[0])
            cfg_scale = cfg_scale.view(-1, *([1] * (eps.dim() - 1)))
        guided = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([guided, guided], dim=0), rest], dim=1)
