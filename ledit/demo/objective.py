"""What the demo's models predict, and the training loss and sampling model that go with it.

``v`` (the default) is Salimans & Ho's velocity, v = sqrt(abar) eps - sqrt(1 - abar) x0, so that
x0 = sqrt(abar) x_t - sqrt(1 - abar) v. At low noise the clean image is x_t plus a small correction, so a tiny
model whose tokens are barely wider than its patches (64 channels for 4x4 pixels) keeps sharp edges; at high
noise it is a direct prediction of x0, so a briefly trained model does not blow its errors up as an eps model
does. ``x0`` (predict the clean image) blurs every sample through that bottleneck; ``eps`` (DiT's choice) needs
far longer training. ``ledit.diffusion`` knows x0 and eps; a v model is sampled through ``XStartFromV``.
"""

from __future__ import annotations

import functools

import torch

from ledit.models.packing import PackedDenoiser, loss_weights, token_timesteps

PREDICTIONS = ("v", "x0", "eps")


def diffusion_kwargs(prediction: str) -> dict:
    """``create_diffusion``'s options for a model predicting ``prediction`` (a v model is sampled as x0)."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    return {"predict_xstart": prediction != "eps"}


def _alpha_bar(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """alpha_bar at (possibly fractional, as under a timestep shift) steps ``t``: log-SNR interpolated linearly
    between the neighbouring steps, as ``ledit.diffusion.shift_schedule`` defines fractional steps."""
    log_snr = (alphas_cumprod / (1 - alphas_cumprod)).log()
    t = t.to(torch.float64).clamp(0, len(alphas_cumprod) - 1)
    low = t.floor().long()
    high = (low + 1).clamp(max=len(alphas_cumprod) - 1)
    return torch.sigmoid(torch.lerp(log_snr[low], log_snr[high], t - low)).to(torch.float32)


def training_loss(diffusion, model, x_start, t, labels, noise, prediction: str, grids=None) -> torch.Tensor:
    """Mean squared error of the model's prediction at steps ``t`` (B,): DiT's loss for x0 and eps, and the
    same on v.

    A packed batch (``grids`` the (n, 2) token grids of x_start's (T, C, p, p) patches, t and labels (n,)) is
    scored per image: each image's mean error, averaged over the images, so a large image counts as much as a
    small one (``ledit train --max-tokens``' default)."""
    if grids is not None:
        tokens = x_start.shape[0]
        per_token_t = token_timesteps(t, grids, tokens)
        if prediction == "v":
            losses = _v_error(diffusion, functools.partial(model, grids=grids), x_start, per_token_t, t, labels,
                              noise).flatten(1).mean(1)
        else:
            losses = diffusion.training_losses(PackedDenoiser(model, grids), x_start, per_token_t, {"y": labels},
                                               noise=noise)["loss"]
        return (losses * loss_weights(grids, tokens, per_token=False, normaliser=len(labels))).sum()
    if prediction != "v":
        return diffusion.training_losses(model, x_start, t, {"y": labels}, noise=noise)["loss"].mean()
    return _v_error(diffusion, model, x_start, t, t, labels, noise).mean()


def _v_error(diffusion, model, x_start, t, model_t, labels, noise) -> torch.Tensor:
    """The squared error of a v prediction, elementwise; ``t`` is per row of x_start, ``model_t`` what the model
    takes (the same, or per image for a packed batch)."""
    alpha_bar = diffusion.alphas_cumprod.to(torch.float32)[t].view(-1, 1, 1, 1)
    x_t = diffusion.q_sample(x_start, t, noise=noise)
    target = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x_start
    return (model(x_t, model_t, labels) - target) ** 2


class XStartFromV(torch.nn.Module):
    """A v model seen as an x0 model, for the diffusion's samplers: forward returns
    sqrt(abar) x_t - sqrt(1 - abar) v. Every other attribute (config, inference options, ...) is the model's."""

    def __init__(self, model: torch.nn.Module, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.model = model
        self.alphas_cumprod = alphas_cumprod.to(torch.float64)

    def forward(self, x, t, y):
        alpha_bar = _alpha_bar(self.alphas_cumprod, t).view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * x - (1 - alpha_bar).sqrt() * self.model(x, t, y)

    def forward_with_cfg(self, *args, **kwargs):
        # Without this, the model's own forward_with_cfg (a v prediction) would be taken for x0.
        raise ValueError("the demo's models are trained without label dropout: they cannot be guided")

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


def sampling_model(model: torch.nn.Module, prediction: str, alphas_cumprod: torch.Tensor) -> torch.nn.Module:
    """The model to hand to ``ledit.diffusion`` (with ``diffusion_kwargs(prediction)``)."""
    return XStartFromV(model, alphas_cumprod) if prediction == "v" else model
