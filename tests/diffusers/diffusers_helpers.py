"""Tiny random ledit models and a tiny random diffusers DiT for the diffusers tests (nothing downloaded)."""

import torch
from workflow_fixtures import TINY_MODEL

from ledit.checkpoint import save_checkpoint
from ledit.models import build_model


def perturbed(model, seed=0):
    """``model`` with every weight moved off its (often zero) initialisation, so every path is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.eval()


def tiny_ledit(family="LEDiT", seed=0, **options):
    """A tiny random LEDiT or DiT on 4-channel 8x8 latents (64x64 images through the tiny VAE), 10 classes."""
    torch.manual_seed(seed)
    options = {"input_size": 8, "num_classes": 10, **TINY_MODEL, **options}
    return perturbed(build_model(family, **options), seed)


def save_ledit_checkpoint(model, path):
    weights = model.state_dict()
    checkpoint = {"model": weights, "ema": weights, "opt": None, "args": {}, "step": 0, "config": model.config}
    save_checkpoint(checkpoint, path)
    return path


def tiny_diffusers_dit(seed=0, **config):
    """diffusers' own DiTTransformer2DModel, tiny and random, with one timestep/label embedder copied into every
    block as in the published weights (converted from facebookresearch/DiT)."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    config = {"num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 4, "out_channels": 8,
              "num_layers": 3, "sample_size": 8, "patch_size": 2, "num_embeds_ada_norm": 10, **config}
    dit = perturbed(DiTTransformer2DModel(**config), seed)
    shared = dit.transformer_blocks[0].norm1.emb.state_dict()
    for block in dit.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(shared)
    return dit
