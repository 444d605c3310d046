"""The Stable Diffusion VAE DiT works in (diffusers' AutoencoderKL), or none for models trained on pixels.

Weights never download at run time: a name resolves through the local Hugging Face cache only, and the error
says how to fetch it once. A local folder (``save_pretrained`` layout) works anywhere.
"""

from __future__ import annotations

from pathlib import Path

import torch

VAE_REPOS = {"ema": "stabilityai/sd-vae-ft-ema", "mse": "stabilityai/sd-vae-ft-mse"}
VAE_HELP = "ema | mse | sd-vae-ft-ema | sd-vae-ft-mse | a local AutoencoderKL folder | none (pixel-space models)"


def vae_repo(spec: str) -> str:
    spec = spec.removeprefix("stabilityai/").removeprefix("sd-vae-ft-")
    return VAE_REPOS.get(spec, spec)


def load_vae(spec: str, device: torch.device | str = "cpu"):
    """AutoencoderKL in eval mode, or None for ``spec == "none"``."""
    if spec == "none":
        return None
    try:
        from diffusers.models import AutoencoderKL
    except ImportError as e:
        raise ImportError(f"--vae {spec} needs diffusers: pip install 'ledit[train]' (or pass --vae none)") from e
    source = spec if Path(spec).is_dir() else vae_repo(spec)
    try:
        vae = AutoencoderKL.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"--vae {spec}: no AutoencoderKL at {source!r} (not a local folder, not in the Hugging Face cache). "
            f"Fetch it once with `hf download {source}` (or pass a local folder), then re-run."
        ) from e
    return vae.to(device).eval().requires_grad_(False)


def vae_downsample(vae) -> int:
    """Image pixels per latent pixel along each axis (8 for the SD VAE, 1 without a VAE)."""
    return 1 if vae is None else 2 ** (len(vae.config.block_out_channels) - 1)


def vae_scale_factor(vae) -> float:
    return 1.0 if vae is None else float(vae.config.scaling_factor)


def vae_channels(vae) -> int:
    return 3 if vae is None else int(vae.config.latent_channels)


@torch.no_grad()
def encode_moments(vae, images: torch.Tensor) -> torch.Tensor:
    """Posterior (mean, logvar) of images in [-1, 1]: (B, 2C, h, w)."""
    return vae.encode(images).latent_dist.parameters


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (identity without a VAE)."""
    if vae is None:
        return latents
    return vae.decode(latents / vae_scale_factor(vae)).sample
