"""``ledit train``: DiT's train.py for DiT and LEDiT, under torchrun (DDP, or FSDP for large models).

Data is a latent-shard folder (``ledit extract-latents``) or a raw ImageFolder (encoded by the VAE on the fly;
with ``--vae none`` the model trains on pixels). ``--resume`` continues exactly: weights, EMA, optimizer, the
sampler's position and every rank's RNG state are in the checkpoint.

    torchrun --nproc_per_node=8 -m ledit train --model LEDiT-XL/2 --data-path latents/ \\
        --init-from-dit DiT-XL-2-256x256.pt --max-steps 100000 --global-batch-size 256
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ledit.checkpoint import CheckpointError, export_safetensors, load_checkpoint, save_checkpoint
from ledit.data.images import ImageFolderDataset
from ledit.data.sampler import ResumableDistributedSampler
from ledit.data.shards import LatentShardDataset, is_shard_dir, sample_posterior
from ledit.data.vae import VAE_HELP, load_vae, vae_channels, vae_downsample, vae_scale_factor
from ledit.diffusion import create_diffusion
from ledit.models import build_model, from_dit_checkpoint
from ledit.runtime import DistContext, broadcast_object, cleanup_distributed, setup_distributed
from ledit.training.engine import (
    full_training_state,
    gather_rng_states,
    load_training_state,
    restore_rng_state,
    update_ema,
    wrap_model,
)

logger = logging.getLogger("ledit.train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser.add_argument
    p("--data-path", required=True, help="latent-shard folder (ledit extract-latents) or ImageFolder of images")
    p("--results-dir", default="results")
    p("--model", default=None, help="a DiT_models / LEDiT_models name (default LEDiT-XL/2, or the resumed one)")
    p("--model-kwargs", type=json.loads, default={}, help='JSON overrides for the model, e.g. \'{"depth": 2}\'')
    p("--image-size", type=int, default=256, help="square image size for an ImageFolder (shards carry theirs)")
    p("--num-classes", type=int, default=1000)
    p("--epochs", type=int, default=1400)
    p("--max-steps", type=int, default=None, help="stop after this many steps (the paper fine-tunes for 100000)")
    p("--global-batch-size", type=int, default=256)
    p("--global-seed", type=int, default=0)
    p("--vae", default="ema", help=f"for an ImageFolder: {VAE_HELP}")
    p("--num-workers", type=int, default=4)
    p("--log-every", type=int, default=100)
    p("--ckpt-every", type=int, default=50_000)
    p("--lr", type=float, default=1e-4)
    p("--weight-decay", type=float, default=0.0)
    p("--ema-decay", type=float, default=0.9999)
    p("--bf16", action="store_true", help="bf16 autocast for the model's forward and backward")
    p("--tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 matmuls on Ampere+ GPUs")
    p("--grad-checkpointing", action="store_true", help="recompute block activations in backward (less memory)")
    p("--fsdp", action="store_true", help="shard parameters, gradients and optimizer state (FSDP2) instead of DDP")
    p("--multi-dilation-prob", type=float, default=None, help="LEDiT: chance of a dilation-2 training forward (0.1)")
    p("--init-from-dit", default=None, help="facebookresearch/DiT checkpoint to start from (the paper's fine-tune)")
    p("--resume", default=None, help="checkpoint .pt, or an experiment folder (its latest checkpoint)")
    p("--save-safetensors", action="store_true", help="also write the EMA weights of every checkpoint as safetensors")
    p("--device", default=None, help="cuda | cpu (default: cuda if available)")


# ----------------------------------------------------------------------------------------------------------------
# Data and model


def build_data(args, ctx: DistContext):
    """(dataset, latent shape (C, h, w), VAE or None, latent scale factor, whether items are posterior moments)."""
    if is_shard_dir(args.data_path):
        data = LatentShardDataset(args.data_path)
        c2, h, w = data.index["latent_shape"]
        return data, (c2 // 2, h, w), None, data.scale_factor, True
    if not Path(args.data_path).is_dir():
        raise FileNotFoundError(f"--data-path {args.data_path!r} does not exist")
    vae = load_vae(args.vae, ctx.device)
    down = vae_downsample(vae)
    if args.image_size % down:
        raise ValueError(f"--image-size {args.image_size} must be divisible by the VAE's factor {down}")
    data = ImageFolderDataset(args.data_path, args.image_size)
    size = args.image_size // down
    return data, (vae_channels(vae), size, size), vae, vae_scale_factor(vae), False


def model_from_args(args, latent_shape, config: dict | None = None) -> torch.nn.Module:
    """The model from a checkpoint's config, or from --model/--model-kwargs (optionally with DiT's weights)."""
    if config is not None:
        if args.model not in (None, config["name"]):
            raise ValueError(f"--model {args.model}: the checkpoint to resume holds a {config['name']}")
        return build_model(**config)
    args.model = args.model or "LEDiT-XL/2"
    c, h, w = latent_shape
    kwargs = {"input_size": h if h == w else (h, w), "in_channels": c, "num_classes": args.num_classes}
    if args.multi_dilation_prob is not None:
        if not args.model.startswith("LEDiT"):
            raise ValueError(f"--multi-dilation-prob applies to LEDiT models, not {args.model}")
        kwargs["multi_dilation_prob"] = args.multi_dilation_prob
    kwargs.update(args.model_kwargs)
    if args.init_from_dit is None:
        return build_model(args.model, **kwargs)
    model, report = from_dit_checkpoint(args.init_from_dit, name=args.model, **kwargs)
    logger.info("--init-from-dit %s: %d tensors loaded (%s weights), dropped %s, freshly initialised %s",
                args.init_from_dit, len(report.loaded), report.source, list(report.dropped), list(report.initialized))
    return model


def resolve_resume(path: str) -> Path:
    path = Path(path)
    if path.is_dir():
        found = sorted((path / "checkpoints").glob("*.pt")) if (path / "checkpoints").is_dir() else []
        if not found:
            raise FileNotFoundError(f"--resume {str(path)!r}: no checkpoints/*.pt in that experiment folder")
        return found[-1]
    if not path.is_file():
        raise FileNotFoundError(f"--resume {str(path)!r} does not exist")
    return path


def new_experiment_dir(results_dir: str, model_name: str) -> Path:
    root = Path(results_dir)
    root.mkdir(parents=True, exist_ok=True)
    index = len([p for p in root.iterdir() if p.is_dir()])
    return root / f"{index:03d}-{model_name.replace('/', '-')}"


class TrainingLog:
    """Mean loss over the last interval (averaged over ranks) and throughput, to the log and to log.jsonl."""

    def __init__(self, path: Path, global_batch_size: int, ctx: DistContext):
        self.path, self.global_batch_size, self.ctx = path, global_batch_size, ctx
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.steps, self.start = 0.0, 0, time.time()

    def add(self, loss: float) -> None:
        self.loss_sum += loss
        self.steps += 1

    def flush(self, step: int) -> None:
        avg = torch.tensor(self.loss_sum / self.steps, device=self.ctx.device)
        if dist.is_initialized():
            dist.all_reduce(avg)
            avg /= self.ctx.world_size
        images_per_s = self.steps * self.global_batch_size / (time.time() - self.start)
        if self.ctx.is_main:
            logger.info("step %07d | loss %.4f | %.1f images/s", step, avg.item(), images_per_s)
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "loss": avg.item(), "images_per_s": images_per_s}) + "\n")
        self._reset()


# ----------------------------------------------------------------------------------------------------------------
# Training loop


def main(args: argparse.Namespace) -> None:
    ctx = setup_distributed(args.device)
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING, format="[%(asctime)s] %(message)s")
    if args.global_batch_size % ctx.world_size:
        raise ValueError(f"--global-batch-size {args.global_batch_size} must be divisible by the world size "
                         f"{ctx.world_size}")
    local_batch = args.global_batch_size // ctx.world_size
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32

    resume = load_checkpoint(resolve_resume(args.resume)) if args.resume else None
    if resume is not None and resume.get("opt") is None:
        raise CheckpointError(f"--resume {args.resume} has no optimizer state (a converted or exported checkpoint): "
                              "start from DiT weights with --init-from-dit instead")
    if resume is not None and resume["args"]["global_batch_size"] != args.global_batch_size:
        raise ValueError(f"--resume: the run used --global-batch-size {resume['args']['global_batch_size']}")
    torch.manual_seed(args.global_seed * ctx.world_size + ctx.rank)
    data, latent_shape, vae, scale, from_moments = build_data(args, ctx)
    model = model_from_args(args, latent_shape, resume.get("config") if resume else None)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    ema = copy.deepcopy(model).requires_grad_(False)
    model.to(ctx.device).train()
    ema.to(ctx.device).eval()
    train_model, inner, ema = wrap_model(model, ema, ctx, args.fsdp)
    opt = torch.optim.AdamW(inner.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    diffusion = create_diffusion(timestep_respacing="")

    step = 0
    if resume is not None:
        load_training_state(inner, ema, opt, resume)
        step = resume["step"]
        rng = resume.get("rng", [])
        if len(rng) == ctx.world_size:
            restore_rng_state(rng[ctx.rank], ctx.device)
        else:  # each rank's share of the data and its RNG stream depend on the world size
            logger.warning("resuming on %d ranks a run made on %d: continuing, but not bit-exactly (RNG reseeded)",
                           ctx.world_size, len(rng))
            torch.manual_seed((args.global_seed + step) * ctx.world_size + ctx.rank)
        exp_dir = resolve_resume(args.resume).parent.parent
    else:
        exp_dir = broadcast_object(new_experiment_dir(args.results_dir, model.config["name"]) if ctx.is_main else None)
    ckpt_dir = exp_dir / "checkpoints"
    if ctx.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("experiment %s | %s, %.1fM parameters | %d items | start step %d", exp_dir,
                    model.config["name"], n_params / 1e6, len(data), step)

    sampler = ResumableDistributedSampler(len(data), ctx.world_size, ctx.rank, seed=args.global_seed)
    steps_per_epoch = sampler.num_per_rank // local_batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data)} items cannot fill one batch of {local_batch} per rank: "
                         "lower --global-batch-size")
    max_steps = args.max_steps if args.max_steps is not None else args.epochs * steps_per_epoch

    def model_fn(x, t, **kwargs):
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            return train_model(x, t, **kwargs).float()

    def checkpoint(step: int) -> None:
        model_sd, ema_sd, opt_sd = full_training_state(inner, ema, opt)
        rng = gather_rng_states(ctx.device)
        if ctx.is_main:
            state = {"model": model_sd, "ema": ema_sd, "opt": opt_sd, "args": vars(args), "step": step,
                     "config": model.config, "rng": rng}
            path = save_checkpoint(state, ckpt_dir / f"{step:07d}.pt")
            if args.save_safetensors:
                export_safetensors(ema_sd, path.with_suffix(".safetensors"), model.config)
            logger.info("saved checkpoint %s", path)

    log = TrainingLog(exp_dir / "log.jsonl", args.global_batch_size, ctx)
    while step < max_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch, start=offset * local_batch)
        loader = torch.utils.data.DataLoader(
            data, batch_size=local_batch, sampler=sampler, num_workers=args.num_workers, drop_last=True,
            pin_memory=ctx.device.type == "cuda",
            generator=torch.Generator(),  # keep DataLoader's worker seeding off the global RNG (exact resume)
        )
        for x, y in loader:
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            with torch.no_grad():
                if from_moments:
                    x = sample_posterior(x, scale)
                elif vae is not None:
                    x = vae.encode(x).latent_dist.sample().mul_(scale)
            t = torch.randint(0, diffusion.num_timesteps, (x.shape[0],), device=ctx.device)
            loss = diffusion.training_losses(model_fn, x, t, dict(y=y))["loss"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            update_ema(ema, inner, args.ema_decay)
            step += 1
            log.add(loss.item())
            if step % args.log_every == 0 or step == max_steps:
                log.flush(step)
            if step % args.ckpt_every == 0 or step == max_steps:
                checkpoint(step)
            if step >= max_steps:
                break
    if ctx.is_main:
        logger.info("done at step %d", step)
    cleanup_distributed()
