"""``ledit train``: DiT's train.py for DiT and LEDiT, under torchrun (DDP, or FSDP for large models).

Data is a latent-shard folder (``ledit extract-latents``) or a raw ImageFolder (encoded by the VAE on the fly;
with ``--vae none`` the model trains on pixels). ``--resume`` continues exactly: weights, EMA, optimizer, the
sampler's position and every rank's RNG state are in the checkpoint, and so are the run's settings
(``ledit.training.settings``). Experiment folders: ``ledit.training.experiment``.

``--max-tokens N`` trains at native resolution: each rank's step is one packed sequence of images of their own
sizes (``ledit.data.packing``), with one timestep per image and the loss averaged per image (``--loss-per-token``:
per token). Without it, training is DiT's fixed-size batches, exactly as before.

    torchrun --nproc_per_node=8 -m ledit train --model LEDiT-XL/2 --data-path latents/ \\
        --init-from-dit DiT-XL-2-256x256.pt --max-steps 100000 --global-batch-size 256
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ledit.arguments import UsageError
from ledit.checkpoint import CheckpointError, export_safetensors, load_checkpoint, save_checkpoint
from ledit.data.images import ImageFolderDataset
from ledit.data.packing import PackedBatchSampler, as_list
from ledit.data.sampler import ResumableDistributedSampler
from ledit.data.shards import LatentShardDataset, is_shard_dir, sample_posterior
from ledit.data.vae import load_vae, vae_channels, vae_downsample, vae_scale_factor
from ledit.diffusion import create_diffusion
from ledit.models import build_model, from_dit_checkpoint
from ledit.models.packing import PackedDenoiser, loss_weights, pack, token_timesteps
from ledit.runtime import DistContext, broadcast_object, cleanup_distributed, setup_distributed
from ledit.training.engine import (
    full_training_state,
    gather_rng_states,
    load_training_state,
    restore_rng_state,
    update_ema,
    wrap_model,
)
from ledit.training.experiment import (
    CHECKPOINTS,
    LOG_NAME,
    claim_experiment_dir,
    experiment_of,
    remove_if_unused,
    resolve_resume,
    tidy_for_resume,
)
from ledit.training.settings import add_arguments, check_settings, model_arguments, resolve_settings

__all__ = ["add_arguments", "main"]

logger = logging.getLogger("ledit.train")


# ----------------------------------------------------------------------------------------------------------------
# Data and model


def build_data(args, ctx: DistContext):
    """(dataset, latent shape (C, h, w), VAE or None, latent scale factor, whether items are posterior moments)."""
    if is_shard_dir(args.data_path):
        data = LatentShardDataset(args.data_path)
        if data.native and args.max_tokens is None:
            raise UsageError(f"--data-path {args.data_path} holds native-resolution latents of several sizes: "
                             "train on them packed with --max-tokens N")
        c2, h, w = data.index["latent_shape"]
        return data, (c2 // 2, h, w), None, data.scale_factor, True
    if not Path(args.data_path).is_dir():
        raise FileNotFoundError(f"--data-path {args.data_path!r} does not exist")
    if args.max_tokens is not None:
        raise UsageError(f"--max-tokens packs latents: --data-path {args.data_path} is an ImageFolder; encode it "
                         "first with `ledit extract-latents --native-resolution` and train on that folder")
    vae = load_vae(args.vae, ctx.device)
    down = vae_downsample(vae)
    if args.image_size % down:
        raise UsageError(f"--image-size {args.image_size} must be divisible by the VAE's factor {down}")
    data = ImageFolderDataset(args.data_path, args.image_size, check=args.check_images, skip_bad=args.skip_bad_images)
    size = args.image_size // down
    return data, (vae_channels(vae), size, size), vae, vae_scale_factor(vae), False


def packed_batches(args, data, patch_size: int, ctx: DistContext) -> PackedBatchSampler:
    """This rank's packed sequences of at most --max-tokens tokens (a latent-shard folder's images)."""
    latent_sizes = data.latent_sizes
    if (latent_sizes % patch_size).any():
        raise UsageError(f"--data-path {args.data_path} holds latents whose sides are not multiples of the model's "
                         f"patch size {patch_size}: extract them with --patch-size {patch_size}")
    tokens = latent_sizes.prod(axis=1) // (patch_size * patch_size)
    if tokens.max() > args.max_tokens:
        raise UsageError(f"--max-tokens {args.max_tokens} cannot hold the largest image of --data-path, "
                         f"{int(tokens.max())} tokens: raise --max-tokens")
    packer = PackedBatchSampler(tokens, args.max_tokens, ctx.world_size, ctx.rank, seed=args.global_seed)
    if packer.steps_in_epoch(0) == 0:
        raise UsageError(f"{len(data)} items make no packed sequence on every one of {ctx.world_size} ranks: "
                         "use fewer ranks or more data")
    return packer


def model_from_args(args, latent_shape, config: dict | None = None) -> torch.nn.Module:
    """The model from a checkpoint's config, or from --model/--model-kwargs (optionally with DiT's weights)."""
    if config is not None:
        return build_model(**config)
    kwargs = model_arguments(args, latent_shape)
    if args.init_from_dit is None:
        return build_model(args.model, **kwargs)
    model, report = from_dit_checkpoint(args.init_from_dit, name=args.model, **kwargs)
    logger.info("--init-from-dit %s: %d tensors loaded (%s weights), dropped %s, freshly initialised %s",
                args.init_from_dit, len(report.loaded), report.source, list(report.dropped), list(report.initialized))
    return model


def load_resumable(path: Path) -> dict:
    """A checkpoint ``ledit train`` can continue from, checked for what resuming reads."""
    state = load_checkpoint(path)
    missing = [key for key in ("model", "ema", "opt", "args", "step", "config") if state.get(key) is None]
    if missing == ["opt"]:
        raise CheckpointError(f"--resume {path} has no optimizer state (a converted or exported checkpoint): "
                              "start from its weights with --init-from-dit instead")
    if missing or not isinstance(state["args"], dict) or not isinstance(state["step"], int):
        raise CheckpointError(f"--resume {path} is not a checkpoint of `ledit train`: it lacks {missing or 'args'} "
                              "(a training checkpoint holds model, ema, opt, args, step, config, rng)")
    return state


class TrainingLog:
    """Mean loss over the last interval (averaged over ranks) and throughput, to the log and to log.jsonl."""

    def __init__(self, path: Path, ctx: DistContext):
        self.path, self.ctx = path, ctx
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.steps, self.images, self.tokens, self.start = 0.0, 0, 0, 0, time.time()

    def add(self, loss: float, images: int, tokens: int) -> None:
        """One step's loss, and the images and tokens this rank trained on."""
        self.loss_sum += loss
        self.steps += 1
        self.images += images
        self.tokens += tokens

    def flush(self, step: int) -> None:
        avg = torch.tensor(self.loss_sum / self.steps, device=self.ctx.device)
        counts = torch.tensor([self.images, self.tokens], device=self.ctx.device, dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(avg)
            avg /= self.ctx.world_size
            dist.all_reduce(counts)
        images_per_s, tokens_per_s = (counts / (time.time() - self.start)).tolist()
        if self.ctx.is_main:
            logger.info("step %07d | loss %.4f | %.1f images/s | %.0f tokens/s", step, avg.item(), images_per_s,
                        tokens_per_s)
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "loss": avg.item(), "images_per_s": images_per_s,
                                    "tokens_per_s": tokens_per_s}) + "\n")
        self._reset()


def packed_loss(diffusion, model_fn, items: list, scale: float, patch_size: int, per_token: bool,
                device: torch.device) -> tuple[torch.Tensor, int]:
    """(loss, tokens) of one packed step: ``items`` are (posterior moments (2C, h, w), label) of images of their
    own sizes. One timestep per image; the loss is each image's mean over its tokens, averaged over the images
    (``per_token``: averaged over all tokens)."""
    moments, grids = pack([m.to(device, non_blocking=True) for m, _ in items], patch_size)
    y = torch.tensor([label for _, label in items], device=device)
    with torch.no_grad():
        x = sample_posterior(moments, scale)
    t = torch.randint(0, diffusion.num_timesteps, (len(items),), device=device)
    tokens = x.shape[0]
    losses = diffusion.training_losses(PackedDenoiser(model_fn, grids), x, token_timesteps(t, grids, tokens),
                                       dict(y=y))["loss"]
    weights = loss_weights(grids.to(device), tokens, per_token, tokens if per_token else len(items))
    return (losses * weights).sum(), tokens


# ----------------------------------------------------------------------------------------------------------------
# Training loop


def main(args: argparse.Namespace) -> None:
    resume_path = resolve_resume(args.resume) if args.resume else None
    resume = load_resumable(resume_path) if resume_path else None
    changes = resolve_settings(args, resume["args"] if resume else None)
    check_settings(args, resuming=resume is not None)
    ctx = setup_distributed(args.device)
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING, format="[%(asctime)s] %(message)s")
    for name, (before, after) in changes.items():
        logger.info("resumed with --%s %s (the run had %s)", name.replace("_", "-"), after, before)
    if args.global_batch_size % ctx.world_size:
        raise UsageError(f"--global-batch-size {args.global_batch_size} must be divisible by the world size "
                         f"{ctx.world_size}")
    train(args, ctx, resume, resume_path)
    cleanup_distributed()  # after train() returned: its models and optimizer, which hold the group, are gone


def train(args: argparse.Namespace, ctx: DistContext, resume: dict | None, resume_path: Path | None) -> None:
    """The run itself, from settled args: data, model, optimizer, the training loop, checkpoints."""
    local_batch = args.global_batch_size // ctx.world_size
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32

    torch.manual_seed(args.global_seed * ctx.world_size + ctx.rank)
    data, latent_shape, vae, scale, from_moments = build_data(args, ctx)
    packed = args.max_tokens is not None
    sampler = ResumableDistributedSampler(len(data), ctx.world_size, ctx.rank, seed=args.global_seed)
    steps_per_epoch = sampler.num_per_rank // local_batch
    if steps_per_epoch == 0 and not packed:
        raise UsageError(f"{len(data)} items cannot fill one batch of {local_batch} per rank: "
                         "lower --global-batch-size")
    # Packed epochs differ in length: without --max-steps a packed run stops after --epochs epochs.
    max_steps = args.max_steps if args.max_steps is not None or packed else args.epochs * steps_per_epoch
    model = model_from_args(args, latent_shape, resume["config"] if resume else None)
    if packed:
        packer = packed_batches(args, data, model.patch_size, ctx)
    if resume is None:  # record the model's own default, so a resume that passes it explicitly agrees
        args.multi_dilation_prob = model.config.get("multi_dilation_prob")
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    ema = copy.deepcopy(model).requires_grad_(False)
    model.to(ctx.device).train()
    ema.to(ctx.device).eval()
    train_model, inner, ema = wrap_model(model, ema, ctx, args.fsdp)
    opt = torch.optim.AdamW(inner.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    diffusion = create_diffusion(timestep_respacing="")

    step = 0
    epoch, offset = 0, 0  # the position of a packed run (a fixed-size run's follows from its step)
    if resume is not None:
        load_training_state(inner, ema, opt, resume)
        step = resume["step"]
        if packed:
            if "position" not in resume:
                raise UsageError(f"--resume {resume_path} continues a run of fixed-size batches: --max-tokens cannot "
                                 "change that; drop --max-tokens, or start a new packed run")
            epoch, offset = resume["position"]
        rng = resume.get("rng", [])
        if len(rng) == ctx.world_size:
            restore_rng_state(rng[ctx.rank], ctx.device)
        else:  # each rank's share of the data and its RNG stream depend on the world size
            logger.warning("resuming on %d ranks a run made on %d: continuing, but not bit-exactly (RNG reseeded)",
                           ctx.world_size, len(rng))
            torch.manual_seed((args.global_seed + step) * ctx.world_size + ctx.rank)
        if resume.get("num_items", len(data)) != len(data):
            logger.warning("the data now has %d items, the run had %d: continuing, but on other batches than an "
                           "uninterrupted run", len(data), resume["num_items"])
        exp_dir = experiment_of(resume_path)
        if ctx.is_main:
            tidy_for_resume(exp_dir, step)
    else:
        # Claimed only now, when everything the run needs has been checked and built: a run refused earlier leaves
        # no folder behind.
        exp_dir = broadcast_object(claim_experiment_dir(args.results_dir, model.config["name"]) if ctx.is_main
                                   else None)
    ckpt_dir = exp_dir / CHECKPOINTS
    if ctx.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("experiment %s | %s, %.1fM parameters | %d items | start step %d", exp_dir,
                    model.config["name"], n_params / 1e6, len(data), step)

    def model_fn(x, t, **kwargs):
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            return train_model(x, t, **kwargs).float()

    def checkpoint(step: int) -> None:
        model_sd, ema_sd, opt_sd = full_training_state(inner, ema, opt)
        rng = gather_rng_states(ctx.device)
        if ctx.is_main:
            state = {"model": model_sd, "ema": ema_sd, "opt": opt_sd, "args": vars(args), "step": step,
                     "config": model.config, "rng": rng, "num_items": len(data)}
            if packed:
                state["position"] = [epoch, offset]
            path = save_checkpoint(state, ckpt_dir / f"{step:07d}.pt")
            if args.save_safetensors:
                export_safetensors(ema_sd, path.with_suffix(".safetensors"), model.config)
            logger.info("saved checkpoint %s", path)

    def finished() -> bool:
        return step >= max_steps if max_steps is not None else epoch >= args.epochs

    loader_options = dict(num_workers=args.num_workers, pin_memory=ctx.device.type == "cuda",
                          generator=torch.Generator())  # keep DataLoader's worker seeding off the global RNG
    log = TrainingLog(exp_dir / LOG_NAME, ctx)
    try:
        while not finished():
            if packed:
                packer.set_epoch(epoch, start=offset)
                loader = torch.utils.data.DataLoader(data, batch_sampler=packer, collate_fn=as_list,
                                                     **loader_options)
                last_offset = packer.steps_in_epoch(epoch) if max_steps is None and epoch + 1 == args.epochs else -1
            else:
                epoch, offset = divmod(step, steps_per_epoch)
                sampler.set_epoch(epoch, start=offset * local_batch)
                loader = torch.utils.data.DataLoader(data, batch_size=local_batch, sampler=sampler, drop_last=True,
                                                     **loader_options)
            for batch in loader:
                if packed:
                    loss, tokens = packed_loss(diffusion, model_fn, batch, scale, model.patch_size,
                                               args.loss_per_token, ctx.device)
                    images = len(batch)
                else:
                    x, y = (part.to(ctx.device, non_blocking=True) for part in batch)
                    with torch.no_grad():
                        if from_moments:
                            x = sample_posterior(x, scale)
                        elif vae is not None:
                            x = vae.encode(x).latent_dist.sample().mul_(scale)
                    t = torch.randint(0, diffusion.num_timesteps, (x.shape[0],), device=ctx.device)
                    loss = diffusion.training_losses(model_fn, x, t, dict(y=y))["loss"].mean()
                    images, tokens = x.shape[0], x.shape[0] * math.prod(model.token_grid(*x.shape[2:]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                update_ema(ema, inner, args.ema_decay)
                step, offset = step + 1, offset + 1
                log.add(loss.item(), images, tokens)
                last = step == max_steps or offset == last_offset if packed else step == max_steps
                if step % args.log_every == 0 or last:
                    log.flush(step)
                if step % args.ckpt_every == 0 or last:
                    checkpoint(step)
                if max_steps is not None and step >= max_steps:
                    break
            else:
                epoch, offset = epoch + 1, 0
    except BaseException:
        if resume is None and ctx.is_main and remove_if_unused(exp_dir):
            logger.info("removed %s: the run failed before it wrote anything", exp_dir)
        raise
    if ctx.is_main:
        logger.info("done at step %d", step)
