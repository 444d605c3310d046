"""The Gaussian diffusion process of improved DDPM (Nichol & Dhariwal 2021) as DiT trains and samples it.

Shapes are (B, C, *spatial) with any spatial size: nothing here assumes square images. Per-step coefficients are
kept in float64 and handed to the model's tensors in float32, so results match DiT's numpy implementation.

The model is any callable ``model(x_t, t, **model_kwargs)`` returning a tensor, or an (output, extra) pair.
With a learned sigma it predicts 2*C channels: the mean parameterization (eps or x0) and then values v in
[-1, 1] that interpolate the log-variance between the posterior variance and beta.
"""

from __future__ import annotations

import enum
import math
from typing import Callable, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl


class ModelMeanType(enum.Enum):
    """What the model's first C channels predict."""

    START_X = enum.auto()  # x_0
    EPSILON = enum.auto()  # the noise added to x_0


class ModelVarType(enum.Enum):
    """How the variance of p(x_{t-1} | x_t) is chosen."""

    FIXED_SMALL = enum.auto()  # the posterior variance, beta~_t
    FIXED_LARGE = enum.auto()  # beta_t (beta~_1 at t = 0 for a sensible decoder likelihood)
    LEARNED_RANGE = enum.auto()  # the model interpolates log-variance between beta~_t and beta_t


class LossType(enum.Enum):
    MSE = enum.auto()  # MSE on the mean prediction, plus the VB term when the variance is learned
    RESCALED_MSE = enum.auto()  # as MSE, with the VB term scaled by num_timesteps / 1000
    RESCALED_KL = enum.auto()  # the variational bound alone, scaled by num_timesteps


def randn(shape: Sequence[int], *, device, dtype=torch.float32, generator: Optional[torch.Generator] = None):
    """Standard normal noise on ``device``; drawn from ``generator`` (on its own device) when one is given.

    Drawing on the generator's device and then moving lets a CPU generator seed a CUDA run reproducibly.
    """
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)


class GaussianDiffusion:
    """Training loss and samplers of a diffusion process with the given ``betas`` (float64, one per step)."""

    def __init__(self, *, betas: torch.Tensor, model_mean_type: ModelMeanType, model_var_type: ModelVarType,
                 loss_type: LossType):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) == 0 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a non-empty 1-D sequence of values in (0, 1]")
        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.num_timesteps = len(betas)

        self.betas = betas
        alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        one = betas.new_ones(1)
        self.alphas_cumprod_prev = torch.cat([one, self.alphas_cumprod[:-1]])
        self.alphas_cumprod_next = torch.cat([self.alphas_cumprod[1:], betas.new_zeros(1)])

        # q(x_t | x_0)
        self.one_minus_alphas_cumprod = 1.0 - self.alphas_cumprod
        self.log_one_minus_alphas_cumprod = self.one_minus_alphas_cumprod.log()
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = self.one_minus_alphas_cumprod.sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()

        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / self.one_minus_alphas_cumprod
        # The posterior variance is 0 at t = 0; its log is clipped to the t = 1 value (beta itself for a
        # one-step process, which has no t = 1).
        first = self.posterior_variance[1:2] if self.num_timesteps > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.cat([first, self.posterior_variance[1:]]).log()
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / self.one_minus_alphas_cumprod
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / self.one_minus_alphas_cumprod

        # LEARNED_RANGE interpolates between log beta~_t and log beta_t. FIXED_LARGE uses beta~_1 in place of
        # beta_0 so the t = 0 decoder likelihood is not too sharp.
        self.log_betas = betas.log()
        self.fixed_large_variance = torch.cat([first, betas[1:]])
        self.fixed_large_log_variance = self.fixed_large_variance.log()
        # float32 copies of the tables above per device, made on first use: indexing a device-resident table
        # avoids a blocking host-to-device copy per coefficient per step.
        self._device_tables: dict[tuple[str, torch.device], torch.Tensor] = {}

    def _extract(self, table: str, t: torch.Tensor, shape) -> torch.Tensor:
        """self.<table>[t] in float32, viewed as (B, 1, 1, ...) and broadcast (without copying) to ``shape``."""
        _check_timesteps(t, shape[0])
        key = (table, t.device)
        values = self._device_tables.get(key)
        if values is None:
            values = self._device_tables[key] = getattr(self, table).to(torch.float32).to(t.device)
        return values[t].view(-1, *([1] * (len(shape) - 1))).expand(shape)

    # ----------------------------------------------------------------------------------------------------------
    # The forward process q

    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log-variance of q(x_t | x_0)."""
        mean = self._extract("sqrt_alphas_cumprod", t, x_start.shape) * x_start
        variance = self._extract("one_minus_alphas_cumprod", t, x_start.shape)
        log_variance = self._extract("log_one_minus_alphas_cumprod", t, x_start.shape)
        return mean, variance, log_variance

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor] = None):
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        _check_same_shape(noise, x_start, "noise", "x_start")
        return (
            self._extract("sqrt_alphas_cumprod", t, x_start.shape) * x_start
            + self._extract("sqrt_one_minus_alphas_cumprod", t, x_start.shape) * noise
        )

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of the posterior q(x_{t-1} | x_t, x_0)."""
        _check_same_shape(x_start, x_t, "x_start", "x_t")
        mean = (
            self._extract("posterior_mean_coef1", t, x_t.shape) * x_start
            + self._extract("posterior_mean_coef2", t, x_t.shape) * x_t
        )
        variance = self._extract("posterior_variance", t, x_t.shape)
        log_variance_clipped = self._extract("posterior_log_variance_clipped", t, x_t.shape)
        return mean, variance, log_variance_clipped

    # ----------------------------------------------------------------------------------------------------------
    # The reverse process p

    def p_mean_variance(self, model: Callable, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True,
                        denoised_fn: Optional[Callable] = None, model_kwargs: Optional[dict] = None) -> dict:
        """Apply the model to get p(x_{t-1} | x_t) and its prediction of x_0.

        Returns a dict with "mean", "variance", "log_variance", "pred_xstart" and "extra" (the second item when
        the model returns an (output, extra) pair, else None). ``denoised_fn`` is applied to the predicted x_0
        before clipping it to [-1, 1] (``clip_denoised``), and both before the mean is computed.
        """
        _check_timesteps(t, x.shape[0])
        model_output = model(x, t, **(model_kwargs or {}))
        extra = None
        if isinstance(model_output, tuple):
            model_output, extra = model_output
        model_output, model_var_values = self._split_model_output(model_output, x)

        if self.model_var_type == ModelVarType.LEARNED_RANGE:
            min_log = self._extract("posterior_log_variance_clipped", t, x.shape)
            max_log = self._extract("log_betas", t, x.shape)
            frac = (model_var_values + 1) / 2  # the model outputs [-1, 1]
            model_log_variance = frac * max_log + (1 - frac) * min_log
            model_variance = torch.exp(model_log_variance)
        elif self.model_var_type == ModelVarType.FIXED_LARGE:
            model_variance = self._extract("fixed_large_variance", t, x.shape)
            model_log_variance = self._extract("fixed_large_log_variance", t, x.shape)
        else:
            model_variance = self._extract("posterior_variance", t, x.shape)
            model_log_variance = self._extract("posterior_log_variance_clipped", t, x.shape)

        def process_xstart(x0):
            if denoised_fn is not None:
                x0 = denoised_fn(x0)
            return x0.clamp(-1, 1) if clip_denoised else x0

        if self.model_mean_type == ModelMeanType.START_X:
            pred_xstart = process_xstart(model_output)
        else:
            pred_xstart = process_xstart(self._predict_xstart_from_eps(x, t, model_output))
        model_mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": model_mean,
            "variance": model_variance,
            "log_variance": model_log_variance,
            "pred_xstart": pred_xstart,
            "extra": extra,
        }

    def _split_model_output(self, model_output: torch.Tensor, x: torch.Tensor):
        """(mean prediction, variance values or None), after checking the output has the shape we need."""
        learned = self.model_var_type == ModelVarType.LEARNED_RANGE
        expected = (x.shape[0], x.shape[1] * (2 if learned else 1), *x.shape[2:])
        if tuple(model_output.shape) != expected:
            why = "2*C channels: the mean prediction, then the variance values" if learned else "C channels"
            raise ValueError(
                f"model output has shape {tuple(model_output.shape)} for input {tuple(x.shape)}; expected "
                f"{expected} ({why}). Does the model's learn_sigma match the diffusion's learn_sigma?"
            )
        if learned:
            return torch.split(model_output, x.shape[1], dim=1)
        return model_output, None

    def _predict_xstart_from_eps(self, x_t, t, eps):
        return (
            self._extract("sqrt_recip_alphas_cumprod", t, x_t.shape) * x_t
            - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t.shape) * eps
        )

    def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
        numerator = self._extract("sqrt_recip_alphas_cumprod", t, x_t.shape) * x_t - pred_xstart
        return numerator / self._extract("sqrt_recipm1_alphas_cumprod", t, x_t.shape)

    def condition_mean(self, cond_fn, p_mean_var, x, t, model_kwargs=None):
        """Shift the mean by variance * grad log p(y | x) (classifier guidance, Dhariwal & Nichol 2021)."""
        gradient = cond_fn(x, t, **(model_kwargs or {}))
        return p_mean_var["mean"].float() + p_mean_var["variance"] * gradient.float()

    def condition_score(self, cond_fn, p_mean_var, x, t, model_kwargs=None):
        """Classifier guidance for DDIM: shift the score, i.e. eps -= sqrt(1 - alpha_bar) * grad log p(y | x)."""
        alpha_bar = self._extract("alphas_cumprod", t, x.shape)
        eps = self._predict_eps_from_xstart(x, t, p_mean_var["pred_xstart"])
        eps = eps - (1 - alpha_bar).sqrt() * cond_fn(x, t, **(model_kwargs or {}))
        out = dict(p_mean_var)
        out["pred_xstart"] = self._predict_xstart_from_eps(x, t, eps)
        out["mean"], _, _ = self.q_posterior_mean_variance(out["pred_xstart"], x, t)
        return out

    # ----------------------------------------------------------------------------------------------------------
    # Ancestral (DDPM) sampling

    def p_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, cond_fn=None, model_kwargs=None,
                 generator: Optional[torch.Generator] = None) -> dict:
        """One step x_t -> x_{t-1}; returns {"sample", "pred_xstart"}. No noise is added at t = 0."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        noise = randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        if cond_fn is not None:
            out["mean"] = self.condition_mean(cond_fn, out, x, t, model_kwargs)
        sample = out["mean"] + _nonzero_mask(t, x) * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def p_sample_loop(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, cond_fn=None,
                      model_kwargs=None, device=None, progress=False,
                      generator: Optional[torch.Generator] = None, start_step: Optional[int] = None) -> torch.Tensor:
        """Generate samples of ``shape`` = (B, C, *spatial) by running every step of the reverse process.

        ``noise`` is the starting x_T (drawn from ``generator`` when None); ``device`` defaults to the noise's,
        else the model's parameters'. The same generator state gives the same samples. ``start_step`` (an
        internal step index) starts the reverse process there instead of at the last step, with ``noise`` as
        x at that step (SDEdit-style refinement of a re-noised image).
        """
        steps = self.p_sample_loop_progressive(
            model, shape, noise, clip_denoised, denoised_fn, cond_fn, model_kwargs, device, progress, generator,
            start_step,
        )
        return _last(steps)["sample"]

    def p_sample_loop_progressive(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, cond_fn=None,
                                  model_kwargs=None, device=None, progress=False,
                                  generator: Optional[torch.Generator] = None,
                                  start_step: Optional[int] = None) -> Iterator[dict]:
        """As ``p_sample_loop``, yielding each step's {"sample", "pred_xstart"}."""

        def step(x, t):
            return self.p_sample(model, x, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, generator)

        yield from self._reverse_process(step, model, shape, noise, device, progress, generator, start_step)

    # ----------------------------------------------------------------------------------------------------------
    # DDIM sampling (Song et al. 2021)

    def ddim_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, cond_fn=None, model_kwargs=None, eta=0.0,
                    generator: Optional[torch.Generator] = None) -> dict:
        """One DDIM step x_t -> x_{t-1}; ``eta`` = 0 is deterministic, 1 matches DDPM's posterior variance."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        if cond_fn is not None:
            out = self.condition_score(cond_fn, out, x, t, model_kwargs)
        # Re-derive eps from the (possibly clipped) x_0 so the step is consistent with it.
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = self._extract("alphas_cumprod", t, x.shape)
        alpha_bar_prev = self._extract("alphas_cumprod_prev", t, x.shape)
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar)).sqrt() * (1 - alpha_bar / alpha_bar_prev).sqrt()
        mean_pred = out["pred_xstart"] * alpha_bar_prev.sqrt() + (1 - alpha_bar_prev - sigma**2).sqrt() * eps
        sample = mean_pred
        if eta > 0:
            noise = randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            sample = mean_pred + _nonzero_mask(t, x) * sigma * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_reverse_sample(
        self, model, x, t, clip_denoised=True, denoised_fn=None, cond_fn=None, model_kwargs=None, eta=0.0
    ) -> dict:
        """One deterministic DDIM step x_t -> x_{t+1} (DDIM inversion); returns {"sample", "pred_xstart"}."""
        if eta != 0.0:
            raise ValueError(f"ddim_reverse_sample follows the deterministic DDIM path only; pass eta=0.0, not {eta}")
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        if cond_fn is not None:
            out = self.condition_score(cond_fn, out, x, t, model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar_next = self._extract("alphas_cumprod_next", t, x.shape)
        sample = out["pred_xstart"] * alpha_bar_next.sqrt() + (1 - alpha_bar_next).sqrt() * eps
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample_loop(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, cond_fn=None,
                         model_kwargs=None, device=None, progress=False, eta=0.0,
                         generator: Optional[torch.Generator] = None, start_step: Optional[int] = None) -> torch.Tensor:
        """Generate samples with DDIM; arguments as ``p_sample_loop`` plus ``eta``."""
        steps = self.ddim_sample_loop_progressive(
            model, shape, noise, clip_denoised, denoised_fn, cond_fn, model_kwargs, device, progress, eta, generator,
            start_step,
        )
        return _last(steps)["sample"]

    def ddim_sample_loop_progressive(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, cond_fn=None,
                                     model_kwargs=None, device=None, progress=False, eta=0.0,
                                     generator: Optional[torch.Generator] = None,
                                     start_step: Optional[int] = None) -> Iterator[dict]:
        """As ``ddim_sample_loop``, yielding each step's {"sample", "pred_xstart"}."""
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0 (0: deterministic DDIM, 1: DDPM-like noise), got {eta!r}")

        def step(x, t):
            return self.ddim_sample(model, x, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, eta, generator)

        yield from self._reverse_process(step, model, shape, noise, device, progress, generator, start_step)

    def _reverse_process(self, step, model, shape, noise, device, progress, generator,
                         start_step: Optional[int] = None) -> Iterator[dict]:
        """Run ``step(x_t, t)`` from x at ``start_step`` (default the last step; ``noise`` or fresh noise) down to
        t = 0, yielding each output."""
        if start_step is None:
            start_step = self.num_timesteps - 1
        elif not 0 <= start_step < self.num_timesteps:
            raise ValueError(f"start_step must be an internal step in [0, {self.num_timesteps - 1}], got {start_step}")
        x, device = self._initial_noise(model, shape, noise, device, generator)
        indices = range(start_step, -1, -1)
        for i in tqdm(indices, desc="sampling", unit="step") if progress else indices:
            t = torch.full((x.shape[0],), i, device=device, dtype=torch.long)
            with torch.no_grad():
                out = step(x, t)
            yield out
            x = out["sample"]

    @staticmethod
    def _initial_noise(model, shape, noise, device, generator):
        try:
            shape = tuple(int(s) for s in shape)
        except TypeError:
            raise ValueError(f"shape must be a sequence of ints (B, C, *spatial), got {shape!r}") from None
        if len(shape) < 2 or any(s < 1 for s in shape):
            raise ValueError(f"shape must be (B, C, *spatial) with positive sizes, got {shape}")
        if noise is not None:
            if tuple(noise.shape) != shape:
                raise ValueError(f"noise has shape {tuple(noise.shape)} but shape={shape}; pass matching ones")
            device = noise.device if device is None else torch.device(device)
            return noise.to(device), device
        if device is None:
            device = _model_device(model)
        return randn(shape, device=device, generator=generator), device

    # ----------------------------------------------------------------------------------------------------------
    # Training

    def training_losses(self, model, x_start, t, model_kwargs=None, noise=None) -> dict:
        """Per-sample losses at timesteps ``t`` (shape (B,)); returns a dict of (B,) tensors.

        "loss" is what to minimize. With MSE losses it is "mse" (on eps or x_0) plus, when the variance is
        learned, "vb": the variational-bound term for the variance alone, with the mean prediction detached so
        the VB term never pulls on the mean (iDDPM's hybrid loss; RESCALED_MSE scales it by T/1000).
        With RESCALED_KL it is the whole bound times T.
        """
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)
        terms = {}

        if self.loss_type == LossType.RESCALED_KL:
            terms["loss"] = self._vb_terms_bpd(model, x_start, x_t, t, False, model_kwargs)["output"]
            terms["loss"] = terms["loss"] * self.num_timesteps
            return terms

        model_output = model(x_t, t, **(model_kwargs or {}))
        model_output, model_var_values = self._split_model_output(model_output, x_t)
        if model_var_values is not None:
            frozen_out = torch.cat([model_output.detach(), model_var_values], dim=1)
            terms["vb"] = self._vb_terms_bpd(lambda *_, **__: frozen_out, x_start, x_t, t, False)["output"]
            if self.loss_type == LossType.RESCALED_MSE:
                terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)
        target = x_start if self.model_mean_type == ModelMeanType.START_X else noise
        terms["mse"] = mean_flat((target - model_output) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms

    def _vb_terms_bpd(self, model, x_start, x_t, t, clip_denoised=True, model_kwargs=None) -> dict:
        """The bound's term at t in bits per dimension: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0,
        the discretized decoder negative log-likelihood of x_0 at t = 0."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out["pred_xstart"]}


def _last(iterator):
    item = None
    for item in iterator:  # noqa: B007  (the loop keeps the last item)
        pass
    return item


def _nonzero_mask(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (t != 0).float().view(-1, *([1] * (x.ndim - 1)))


def _check_timesteps(t: torch.Tensor, batch_size: int) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.shape[0] != batch_size or t.is_floating_point():
        got = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"t must be an integer tensor of shape ({batch_size},), one step per sample; got {got}")


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has {tuple(b.shape)}; they must match")


def _model_device(model) -> torch.device:
    """The device of the model's parameters; also for bound methods such as ``model.forward_with_cfg``."""
    owner = getattr(model, "__self__", model)
    parameters = getattr(owner, "parameters", None)
    if callable(parameters):
        first = next(iter(parameters()), None)
        if first is not None:
            return first.device
    raise ValueError("cannot tell which device to sample on from the model; pass device= or noise=")
