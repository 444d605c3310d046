"""LEDiT: a DiT with no positional encoding at all.

Global position comes from causal attention under a 2D scan mask in some blocks (``attention_schedule``,
``scan``); local position from a convolution after patchify (``locality``, see ``ledit.models.locality``).
At a token count other than the training one, Jin et al. attention scaling is applied at inference
(``attention_scaling``, on by default; the training count comes from ``input_size`` / ``patch_size``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ledit.models.backbone import DiffusionTransformer
from ledit.models.inference import NUM_TRAIN_TIMESTEPS
from ledit.models.locality import LOCALITIES, LOCALITY_PLACEMENTS, ModulatedDWConv, build_locality
from ledit.models.packing import Packing
from ledit.ops import SCANS

ATTENTION_SCHEDULES = ("alternate", "all", "none", "single:<i>", "a list of causal block indices")


def causal_block_indices(schedule, depth: int) -> tuple[int, ...]:
    """The 0-based indices of the blocks that use causal (scanned) attention under ``schedule``.

    ``alternate``: blocks 1, 3, 5, ... (block 0 full, as the paper's (SA, CA) x L/2); ``all``; ``none``;
    ``single:<i>``: block i only (App. F); or an explicit list of indices.
    """
    if isinstance(schedule, str):
        if schedule == "alternate":
            return tuple(range(1, depth, 2))
        if schedule == "all":
            return tuple(range(depth))
        if schedule == "none":
            return ()
        if schedule.startswith("single:") and schedule[len("single:"):].strip().isdigit():
            indices = [int(schedule[len("single:"):])]
        else:
            raise ValueError(f"unknown attention_schedule={schedule!r}; valid: {', '.join(ATTENTION_SCHEDULES)}")
    elif isinstance(schedule, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in schedule):
        indices = list(schedule)
    else:
        raise ValueError(f"unknown attention_schedule={schedule!r}; valid: {', '.join(ATTENTION_SCHEDULES)}")
    bad = [i for i in indices if not 0 <= i < depth]
    if bad:
        raise ValueError(f"attention_schedule={schedule!r} names blocks {bad}; the model has blocks 0..{depth - 1}")
    return tuple(sorted(set(indices)))


class LEDiT(DiffusionTransformer):
    """Length-extrapolatable DiT without positional encoding; DiT's constructor arguments plus LEDiT's options.

    Args (beyond DiT's):
        attention_schedule: which blocks are causal, see ``causal_block_indices`` (default "alternate").
        scan: the causal blocks' mask, one of ``ledit.ops.SCANS`` (default "corner", the paper's variant (d)).
        locality: "dwconv" (default, adaLN-Zero gated residual depthwise conv on the fused kernel), "conv" (the
            paper's dense 3x3 conv, identity-initialised) or "none".
        locality_placement: "stem" (one module after patchify, the paper) or "every_block" (a gated dwconv
            branch at the start of every block, each with its own adaLN; dwconv only).
        conv_post_norm: LayerNorm after the stem locality module (App. F, for training from scratch).
        multi_dilation_prob: probability that a training forward runs the locality conv at dilation 2 (same
            weights); eval always uses dilation 1.
        attention_scaling: Jin et al. softmax scale at inference on every layer (see ``softmax_scale``); sets
            the default ``inference_options`` (False: no temperature). ``set_inference_options`` picks other
            temperatures per layer kind, their timestep schedule and the re-dilated stem.
    """

    family = "LEDiT"

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
        attention_schedule="alternate",
        scan: str = "corner",
        locality: str = "dwconv",
        locality_placement: str = "stem",
        conv_post_norm: bool = False,
        multi_dilation_prob: float = 0.1,
        attention_scaling: bool = True,
    ):
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        causal_blocks = causal_block_indices(attention_schedule, depth)
        if scan not in SCANS:
            raise ValueError(f"unknown scan={scan!r}; valid scans: {', '.join(SCANS)}")
        if locality not in LOCALITIES:
            raise ValueError(f"unknown locality={locality!r}; valid: {', '.join(LOCALITIES)}")
        if locality_placement not in LOCALITY_PLACEMENTS:
            raise ValueError(
                f"unknown locality_placement={locality_placement!r}; valid: {', '.join(LOCALITY_PLACEMENTS)}"
            )
        if locality_placement == "every_block" and locality != "dwconv":
            raise ValueError(f"locality_placement='every_block' needs locality='dwconv', got {locality!r}")
        if conv_post_norm and (locality == "none" or locality_placement != "stem"):
            raise ValueError("conv_post_norm normalises the stem locality module's output; it needs "
                             "locality='dwconv' or 'conv' with locality_placement='stem'")
        if not 0.0 <= multi_dilation_prob <= 1.0:
            raise ValueError(f"multi_dilation_prob must be in [0, 1], got {multi_dilation_prob!r}")
        super().__init__(
            input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio, class_dropout_prob,
            num_classes, learn_sigma, attention_scaling, config_kwargs=config,
            scans=[scan if index in causal_blocks else "full" for index in range(depth)],
            block_locality=ModulatedDWConv if locality_placement == "every_block" else None,
        )
        self.causal_blocks = causal_blocks
        self.scan = scan
        self.locality_kind = locality
        self.multi_dilation_prob = float(multi_dilation_prob)
        # Built after the backbone's init: under one seed, the backbone starts from exactly DiT's weights.
        self.locality = build_locality(locality, hidden_size) if locality_placement == "stem" else None
        self.locality_norm = nn.LayerNorm(hidden_size, eps=1e-6) if conv_post_norm else None

    def draw_dilation(self) -> int:
        """Dilation 2 with probability ``multi_dilation_prob`` in training (one draw per forward), else 1."""
        if self.training and self.locality_kind != "none" and self.multi_dilation_prob > 0:
            if torch.rand(()).item() < self.multi_dilation_prob:
                return 2
        return 1

    def inference_capabilities(self) -> dict:
        return {"stem_locality": self.locality_kind if self.locality is not None else None}

    def redilates_stem(self) -> bool:
        """Whether the inference options re-dilate the stem at all (eval mode, ``stem_dilation`` > 1)."""
        return not self.training and self.inference_options.stem_dilation != 1

    def stem_redilation(self, grid) -> int:
        """The inference stem dilation for ``grid``: ``stem_dilation`` when every axis of the grid is at least
        that many times its training length (the conv's receptive field grows on both axes), else 1."""
        if not self.redilates_stem():
            return 1
        dilation = self.inference_options.stem_dilation
        return dilation if all(g >= dilation * g0 for g, g0 in zip(grid, self.train_grid)) else 1

    def embed_tokens(self, x, c, grid, dilation, t):
        tokens = self.patch_tokens(x, grid)
        if self.locality is not None:
            tokens = self.run_stem_locality(tokens, c, grid, dilation, t)
        if self.locality_norm is not None:
            tokens = self.locality_norm(tokens)
        return tokens

    def run_stem_locality(self, tokens, c, grid, dilation, t):
        """The stem locality module at ``dilation``; at inference its conv is re-dilated (ScaleCrafter) for the
        samples with t/T >= ``stem_dilation_until`` (a batch mixing both sides of the switch is split in two; a
        packed batch decides per image)."""
        if isinstance(grid, Packing):
            return self.run_packed_stem_locality(tokens, c, grid, dilation, t)
        redilation = self.stem_redilation(grid)
        if redilation == 1:
            return self.locality(tokens, c, grid, dilation)
        early = t >= self.inference_options.stem_dilation_until * NUM_TRAIN_TIMESTEPS
        n_early = int(early.sum())  # one host sync per forward, at inference only
        if n_early in (0, len(tokens)):
            return self.locality(tokens, c, grid, redilation if n_early else dilation)
        mixed = torch.empty_like(tokens)
        mixed[early] = self.locality(tokens[early], c[early], grid, redilation)
        mixed[~early] = self.locality(tokens[~early], c[~early], grid, dilation)
        return mixed

    def run_packed_stem_locality(self, tokens, c, packing, dilation, t):
        """``run_stem_locality`` of a packed batch: one packed call, unless some image is re-dilated, when each
        image runs on its own at its own dilation (inference only)."""
        if not self.redilates_stem():  # decided without reading the grids on the host
            return self.locality(tokens, c, packing, dilation)
        redilations = [self.stem_redilation(size) for size in packing.host_grids]
        if all(redilation == 1 for redilation in redilations):
            return self.locality(tokens, c, packing, dilation)
        early = (t >= self.inference_options.stem_dilation_until * NUM_TRAIN_TIMESTEPS).tolist()  # one host sync
        pieces = packing.split(tokens)
        return torch.cat([
            self.locality(piece, c[i : i + 1], size, redilation if early[i] else dilation)
            for i, (piece, size, redilation) in enumerate(zip(pieces, packing.host_grids, redilations))
        ], dim=1)
