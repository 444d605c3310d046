"""The improved-DDPM diffusion process DiT uses, with DiT's API: ``create_diffusion(timestep_respacing)``.

    diffusion = create_diffusion(timestep_respacing="")              # training: all 1000 steps
    loss = diffusion.training_losses(model, x, t, dict(y=y))["loss"].mean()
    diffusion = create_diffusion("250")                              # sampling: 250 respaced steps
    x0 = diffusion.p_sample_loop(model.forward_with_cfg, z.shape, z, clip_denoised=False,
                                 model_kwargs=dict(y=y, cfg_scale=4.0), progress=True, device=device)
"""

from __future__ import annotations

from .gaussian import GaussianDiffusion, LossType, ModelMeanType, ModelVarType
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .respace import SpacedDiffusion
from .schedule import BETA_SCHEDULES, get_named_beta_schedule, respace_betas, shift_schedule, space_timesteps

__all__ = [
    "BETA_SCHEDULES",
    "GaussianDiffusion",
    "LossType",
    "ModelMeanType",
    "ModelVarType",
    "SpacedDiffusion",
    "create_diffusion",
    "discretized_gaussian_log_likelihood",
    "get_named_beta_schedule",
    "mean_flat",
    "normal_kl",
    "respace_betas",
    "shift_schedule",
    "space_timesteps",
]


def create_diffusion(
    timestep_respacing,
    noise_schedule: str = "linear",
    use_kl: bool = False,
    sigma_small: bool = False,
    predict_xstart: bool = False,
    learn_sigma: bool = True,
    rescale_learned_sigmas: bool = False,
    diffusion_steps: int = 1000,
    timestep_shift: float = 1.0,
) -> SpacedDiffusion:
    """DiT's diffusion: ``diffusion_steps`` steps of ``noise_schedule``, respaced by ``timestep_respacing``.

    ``timestep_respacing``: ``""``/``None`` keeps every step (training), ``"250"`` or ``"ddim50"`` or
    ``"10,20,30"`` pick fewer (see ``space_timesteps``). With DiT's defaults the model predicts eps and a learned
    variance range, trained with MSE(eps) + VB. ``use_kl`` trains on the rescaled bound alone,
    ``rescale_learned_sigmas`` scales the VB term by diffusion_steps / 1000. ``timestep_shift`` s divides the
    schedule's signal-to-noise ratio by s^2 before respacing (SD3's resolution shift, see ``shift_schedule``;
    s = sqrt(token-count ratio) for larger images); 1.0 leaves the process exactly as DiT's.
    """
    betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
    model_timesteps = None
    if timestep_shift != 1.0:
        betas, model_timesteps = shift_schedule(betas, timestep_shift)
    if use_kl:
        loss_type = LossType.RESCALED_KL
    elif rescale_learned_sigmas:
        loss_type = LossType.RESCALED_MSE
    else:
        loss_type = LossType.MSE
    if learn_sigma:
        model_var_type = ModelVarType.LEARNED_RANGE
    else:
        model_var_type = ModelVarType.FIXED_SMALL if sigma_small else ModelVarType.FIXED_LARGE
    return SpacedDiffusion(
        space_timesteps(diffusion_steps, timestep_respacing),
        betas=betas,
        model_timesteps=model_timesteps,
        model_mean_type=ModelMeanType.START_X if predict_xstart else ModelMeanType.EPSILON,
        model_var_type=model_var_type,
        loss_type=loss_type,
    )
