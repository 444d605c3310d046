"""DiT and the positional-encoding baselines LEDiT is compared with.

``DiT(pos_embed="sincos")`` is facebookresearch/DiT: same module names, same state-dict keys (``pos_embed`` is
a frozen parameter), same init, so official checkpoints load with ``load_state_dict`` unchanged. The other
encodings are the paper's baselines:

- ``sincos`` at another grid: ``sincos_mode="extend"`` (new positions beyond the trained range, default) or
  ``"interpolate"`` (positions squeezed into the trained range).
- ``learnable``: a trained table (initialised with the sin-cos values), bicubically interpolated at other grids.
- ``rope``: 2D RoPE on q and k, with ``rope_method`` = none / pi / ntk / yarn / riflex applied when the grid is
  larger than the training grid, per axis when ``rope_decouple`` (``ledit.models.rope``).
- ``none``: no positional encoding at all (DiT-NoPE).

At inference a RoPE model can instead use a timestep-dependent rule (``model.set_inference_options(
rope_dynamic="dy-ntk" | "dy-yarn" | "lumina")``, see ``ledit.models.inference``).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn as nn

from ledit.models.backbone import DiffusionTransformer
from ledit.models.packing import Packing
from ledit.models.pos_embed import SINCOS_MODES, interpolate_pos_embed, sincos_2d
from ledit.models.rope import Rope2D, check_rope_method

POS_EMBEDS = ("sincos", "learnable", "rope", "none")


@functools.lru_cache(maxsize=8)
def _sincos_table(dim: int, grid: tuple[int, int], train_grid: Optional[tuple[int, int]]) -> torch.Tensor:
    return sincos_2d(dim, grid, train_grid)[None]


class DiT(DiffusionTransformer):
    """Diffusion Transformer (Peebles & Xie) with a choice of positional encoding; DiT's constructor arguments."""

    family = "DiT"

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
        *,
        pos_embed: str = "sincos",
        sincos_mode: str = "extend",
        rope_method: str = "none",
        rope_decouple: bool = True,
        attention_scaling: bool = False,
    ):
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"unknown pos_embed={pos_embed!r}; valid: {', '.join(POS_EMBEDS)}")
        if sincos_mode not in SINCOS_MODES:
            raise ValueError(f"unknown sincos_mode={sincos_mode!r}; valid: {', '.join(SINCOS_MODES)}")
        if sincos_mode != "extend" and pos_embed != "sincos":
            raise ValueError(f"sincos_mode={sincos_mode!r} applies only to pos_embed='sincos', not {pos_embed!r}")
        check_rope_method(rope_method)
        if rope_method != "none" and pos_embed != "rope":
            raise ValueError(f"rope_method={rope_method!r} applies only to pos_embed='rope', not {pos_embed!r}")
        super().__init__(
            input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio, class_dropout_prob,
            num_classes, learn_sigma, attention_scaling, config_kwargs=config,
        )
        self.position_encoding = pos_embed
        self.sincos_mode = sincos_mode
        if pos_embed in ("sincos", "learnable"):
            n_tokens = self.train_grid[0] * self.train_grid[1]
            # DiT keeps the fixed sin-cos table as a frozen Parameter, so its checkpoints carry "pos_embed".
            self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, hidden_size), requires_grad=pos_embed == "learnable")
            with torch.no_grad():
                self.pos_embed.copy_(sincos_2d(hidden_size, self.train_grid)[None])
        else:
            self.register_parameter("pos_embed", None)
        self.rope = Rope2D(self.head_dim, self.train_grid, rope_method, rope_decouple) if pos_embed == "rope" else None

    def position_embedding(self, grid) -> torch.Tensor:
        """The (1, h*w, D) absolute embedding at ``grid`` (sin-cos or learnable models only); a packed batch's
        ``Packing`` gets each image's own, back to back, (1, T, D)."""
        if isinstance(grid, Packing):
            return torch.cat([self.position_embedding(size) for size in grid.host_grids], dim=1)
        if grid == self.train_grid:
            return self.pos_embed
        if self.position_encoding == "learnable":
            return interpolate_pos_embed(self.pos_embed, self.train_grid, grid)
        train_grid = self.train_grid if self.sincos_mode == "interpolate" else None
        table = _sincos_table(self.pos_embed.shape[-1], tuple(grid), train_grid)
        return table.to(device=self.pos_embed.device, dtype=self.pos_embed.dtype)

    def embed_tokens(self, x, c, grid, dilation, t):
        tokens = self.patch_tokens(x, grid)
        if self.pos_embed is not None:
            tokens = tokens + self.position_embedding(grid)
        return tokens

    def rope_tables(self, grid, t):
        """The static tables of ``rope_method``, or at inference the per-timestep ones of ``rope_dynamic``."""
        if self.rope is None:
            return None
        device = self.x_embedder.proj.weight.device
        dynamic = self.inference_options.rope_dynamic
        if isinstance(grid, Packing):  # each image's own positions and rule, back to back: (T, head_dim)
            if dynamic == "none" or self.training:
                tables = [self.rope.tables(size, device) for size in grid.host_grids]
            else:
                tables = [self.rope.dynamic_tables(size, device, dynamic, t[i : i + 1])
                          for i, size in enumerate(grid.host_grids)]
            return tuple(torch.cat(parts) for parts in zip(*tables))
        if dynamic == "none" or self.training:
            return self.rope.tables(grid, device)
        return self.rope.dynamic_tables(grid, device, dynamic, t)

    def inference_capabilities(self) -> dict:
        return {"rope": self.rope is not None}

    def packing_refusal(self):
        if self.position_encoding == "learnable":
            return ("a learnable position table is trained for one token grid (other grids get a bicubic resize "
                    "of it), so images of several sizes share no positions it has learned; use pos_embed='sincos' "
                    "or 'rope' (per-image positions), or LEDiT")
        return None
