"""A diffusion process that visits a subset of another process's timesteps (fewer sampling steps)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .gaussian import GaussianDiffusion
from .schedule import respace_betas


class SpacedDiffusion(GaussianDiffusion):
    """The process over ``use_timesteps`` of the process with ``betas``, with alpha_bar kept at each kept step.

    Internally steps are numbered 0..len(use_timesteps)-1, but the model always sees the original timestep
    (DiT's convention, without timestep rescaling), so a model trained on 1000 steps samples in 250 unchanged.
    ``model_timesteps`` (one per original step, e.g. from ``shift_schedule``) replaces the original step numbers
    the model sees; ``timestep_map`` then holds those (fractional) values at the kept steps.
    """

    def __init__(self, use_timesteps: Iterable[int], *, betas: torch.Tensor,
                 model_timesteps: torch.Tensor | None = None, **kwargs):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        self.original_num_steps = len(betas)
        spaced_betas, kept = respace_betas(betas, use_timesteps)
        self.use_timesteps = set(kept.tolist())
        if model_timesteps is None:
            self.timestep_map = kept
        else:
            if model_timesteps.shape != betas.shape:
                raise ValueError(f"model_timesteps needs one value per step ({len(betas)}), got "
                                 f"{tuple(model_timesteps.shape)}")
            self.timestep_map = model_timesteps.to(torch.float32)[kept]
        super().__init__(betas=spaced_betas, **kwargs)

    def p_mean_variance(self, model, *args, **kwargs):
        return super().p_mean_variance(self._wrap_model(model), *args, **kwargs)

    def training_losses(self, model, *args, **kwargs):
        return super().training_losses(self._wrap_model(model), *args, **kwargs)

    def condition_mean(self, cond_fn, *args, **kwargs):
        return super().condition_mean(self._wrap_model(cond_fn), *args, **kwargs)

    def condition_score(self, cond_fn, *args, **kwargs):
        return super().condition_score(self._wrap_model(cond_fn), *args, **kwargs)

    def original_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The original process's timesteps for steps ``t`` of this one."""
        key = ("timestep_map", t.device)
        if key not in self._device_tables:
            self._device_tables[key] = self.timestep_map.to(t.device)
        return self._device_tables[key][t]

    def _wrap_model(self, model):
        if isinstance(model, _OriginalTimesteps):
            return model
        return _OriginalTimesteps(model, self.original_timesteps)


class _OriginalTimesteps:
    """Calls ``model(x, to_original(t), **kwargs)``: the model sees the timesteps it was trained on."""

    def __init__(self, model, to_original):
        self.model = model
        self.to_original = to_original

    def __call__(self, x, t, **kwargs):
        return self.model(x, self.to_original(t), **kwargs)
