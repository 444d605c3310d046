"""The flags of ``ledit train`` and how a resumed run settles them.

Every flag defaults to None on the command line and to its value in ``DEFAULTS`` in the run, so ``--resume`` can
tell a flag that was given from one that was not: a resumed run continues with the settings it was started with
(read from the checkpoint's ``args``) and only the flags given on the command line can change them. Those that
define the run (``RUN_SETTINGS``: the model, the data's size and VAE, the batch, the seed, the optimizer and EMA)
must agree with the checkpoint; the others (``--max-steps``, ``--epochs``, ``--ckpt-every``, ``--log-every``,
``--num-workers``, ``--fsdp``, ...) may change, and each change is logged.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from ledit import arguments
from ledit.data.images import IMAGE_CHECKS
from ledit.data.vae import VAE_HELP
from ledit.models import MODEL_NAMES, DiT_models, LEDiT_models, build_model
from ledit.models.configs import SIZE_ARGUMENTS
from ledit.runtime import require_packages

# Every setting's default. The flags themselves default to None, so that --resume can tell a flag that was given
# from one that was not: a resumed run takes each setting it was not given from the checkpoint.
DEFAULTS = {
    "data_path": None, "results_dir": "results", "model": "LEDiT-XL/2", "model_kwargs": {}, "image_size": 256,
    "num_classes": 1000, "epochs": 1400, "max_steps": None, "global_batch_size": 256, "global_seed": 0,
    "vae": "ema", "num_workers": 4, "log_every": 100, "ckpt_every": 50_000, "lr": 1e-4, "weight_decay": 0.0,
    "ema_decay": 0.9999, "bf16": False, "tf32": True, "grad_checkpointing": False, "fsdp": False,
    "multi_dilation_prob": None, "init_from_dit": None, "save_safetensors": False, "check_images": "header",
    "skip_bad_images": False, "max_tokens": None, "loss_per_token": False,
}
# The settings that define a run: a resumed run keeps them, and a flag that disagrees with the checkpoint is
# refused (the run would no longer be the one the checkpoint continues).
RUN_SETTINGS = ("model", "model_kwargs", "image_size", "num_classes", "global_batch_size", "global_seed", "vae",
                "lr", "weight_decay", "ema_decay", "bf16", "multi_dilation_prob", "init_from_dit", "max_tokens",
                "loss_per_token")

# Registry names fix the model's size; the family names ("DiT", "LEDiT") take any size.
REGISTRY_NAMES = frozenset(DiT_models) | frozenset(LEDiT_models)
CUSTOM_SIZE_EXAMPLE = {"depth": 12, "hidden_size": 384, "patch_size": 2, "num_heads": 6}
# The --model-kwargs example of the help, which works with the default model.
MODEL_KWARGS_EXAMPLE = {"scan": "raster"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def p(flag: str, help: str = "", **kwargs) -> None:
        default = DEFAULTS[flag[2:].replace("-", "_")]
        shown = f"default {default}" if default not in (None, False, {}) else ""
        text = f"{help} ({shown})" if help and shown else help or shown
        parser.add_argument(flag, default=None, help=text, **kwargs)

    p("--data-path", help="latent-shard folder (ledit extract-latents) or ImageFolder of images (required unless "
                          "--resume, which reuses the run's)")
    p("--results-dir", help="where a new run's experiment folder NNN-<model> is made")
    p("--model", type=arguments.one_of(MODEL_NAMES, "model"), help="a DiT_models / LEDiT_models name, or DiT / "
                                                                     "LEDiT with --model-kwargs for a custom size")
    p("--model-kwargs", type=arguments.json_object, metavar="JSON",
      help=f"model options, e.g. '{json.dumps(MODEL_KWARGS_EXAMPLE)}'; a custom size names the family: --model "
           f"LEDiT --model-kwargs '{json.dumps(CUSTOM_SIZE_EXAMPLE)}'")
    p("--image-size", type=arguments.positive_int, help="square image size for an ImageFolder (shards carry theirs)")
    p("--num-classes", type=arguments.positive_int)
    p("--epochs", type=arguments.positive_int)
    p("--max-steps", type=arguments.positive_int, help="stop after this many steps (the paper fine-tunes for 100000)")
    p("--global-batch-size", type=arguments.positive_int, help="images per step over all ranks (fixed-size "
                                                                 "training; --max-tokens replaces it)")
    p("--max-tokens", type=arguments.positive_int,
      help="native-resolution training: each rank's step is one packed sequence of images of their own sizes, "
           "filled greedily up to this many tokens (a latent-shard folder, e.g. from extract-latents "
           "--native-resolution)")
    p("--loss-per-token", action=argparse.BooleanOptionalAction,
      help="with --max-tokens: average the loss over the tokens of a step rather than per image (default: each "
           "image's mean loss, averaged over the images)")
    p("--global-seed", type=arguments.seed)
    p("--vae", help=f"for an ImageFolder: {VAE_HELP}")
    p("--num-workers", type=arguments.nonnegative_int, help="DataLoader worker processes per rank")
    p("--log-every", type=arguments.positive_int)
    p("--ckpt-every", type=arguments.positive_int)
    p("--lr", type=arguments.nonnegative_float)
    p("--weight-decay", type=arguments.nonnegative_float)
    p("--ema-decay", type=arguments.unit_interval, help="EMA decay in [0, 1]")
    p("--bf16", action=argparse.BooleanOptionalAction, help="bf16 autocast for the model's forward and backward")
    p("--tf32", action=argparse.BooleanOptionalAction, help="TF32 matmuls on Ampere+ GPUs")
    p("--grad-checkpointing", action=argparse.BooleanOptionalAction,
      help="recompute block activations in backward (less memory)")
    p("--fsdp", action=argparse.BooleanOptionalAction,
      help="shard parameters, gradients and optimizer state (FSDP2) instead of DDP")
    p("--multi-dilation-prob", type=arguments.unit_interval,
      help="LEDiT: chance of a dilation-2 training forward (the model's default, 0.1)")
    p("--init-from-dit", help="facebookresearch/DiT checkpoint to start from (the paper's fine-tune)")
    p("--save-safetensors", action=argparse.BooleanOptionalAction,
      help="also write the EMA weights of every checkpoint as safetensors")
    p("--check-images", choices=IMAGE_CHECKS,
      help="for an ImageFolder, check every image before training: header (opens each file), full (decodes each "
           "file), none")
    p("--skip-bad-images", action=argparse.BooleanOptionalAction,
      help="for an ImageFolder, leave unreadable images out (logged) instead of stopping")
    parser.add_argument("--resume", default=None,
                        help="checkpoint .pt, or an experiment folder (its latest checkpoint): continue that run with "
                             "its settings; flags given must agree with them, except those a run may change "
                             "(--max-steps, --epochs, --ckpt-every, --log-every, --num-workers, ...), which are "
                             "logged")
    parser.add_argument("--device", default=None, type=arguments.device,
                        help="cuda | cuda:N | cpu (default: cuda if available)")


def resolve_settings(args: argparse.Namespace, resumed: dict | None) -> dict[str, tuple]:
    """Fill every setting the command line left unset (None) in `args`: from the resumed run's args, else from
    DEFAULTS. Returns {setting: (resumed value, new value)} for the settings a resumed run changes; a changed
    RUN_SETTINGS value is a UsageError."""
    changes = {}
    for name, default in DEFAULTS.items():
        given = getattr(args, name, None)
        if resumed is None or name not in resumed:
            setattr(args, name, default if given is None else given)
            continue
        if given is None or given == resumed[name]:
            setattr(args, name, resumed[name])
            continue
        flag = "--" + name.replace("_", "-")
        if name in RUN_SETTINGS:
            raise arguments.UsageError(
                f"{flag} {_shown(given)} conflicts with the resumed run, which has {_shown(resumed[name])}: a resumed "
                f"run keeps the settings it started with; drop {flag} (or start a new run without --resume)")
        changes[name] = (resumed[name], given)
    return changes


def _shown(value) -> str:
    return json.dumps(value) if isinstance(value, dict) else str(value)


def check_settings(args: argparse.Namespace, resuming: bool) -> None:
    """The checks that need several flags (or the environment) and come before any work."""
    if args.data_path is None:
        raise arguments.UsageError("--data-path is required (a latent-shard folder or an ImageFolder)")
    if args.init_from_dit is not None and not resuming and not os.path.isfile(args.init_from_dit):
        raise FileNotFoundError(f"--init-from-dit {args.init_from_dit!r} does not exist")
    if args.loss_per_token and args.max_tokens is None:
        raise arguments.UsageError("--loss-per-token applies to packed training: add --max-tokens N, or drop it")
    if args.multi_dilation_prob is not None and not args.model.startswith("LEDiT"):
        raise arguments.UsageError(f"--multi-dilation-prob applies to LEDiT models, not --model {args.model}")
    fixed = sorted(set(args.model_kwargs) & set(SIZE_ARGUMENTS)) if args.model in REGISTRY_NAMES else []
    if fixed:
        family = args.model.split("-")[0]
        raise arguments.UsageError(
            f"--model-kwargs sets {', '.join(fixed)}, which --model {args.model} fixes: for a custom size pass "
            f"--model {family} with all of {', '.join(SIZE_ARGUMENTS)}, e.g. --model {family} --model-kwargs "
            f"'{json.dumps(CUSTOM_SIZE_EXAMPLE)}'")
    # The model's arguments are checked by building it on the meta device: no memory, no weights, no work.
    with arguments.flag_errors(f"--model {args.model} --model-kwargs {_shown(args.model_kwargs)}", TypeError,
                               ValueError), torch.device("meta"):
        model = build_model(args.model, **model_arguments(args, (4, 8, 8)))
    refusal = model.packing_refusal()
    if args.max_tokens is not None and refusal is not None:
        raise arguments.UsageError(f"--max-tokens packs images of several sizes, which --model {args.model} "
                                   f"--model-kwargs {_shown(args.model_kwargs)} cannot run: {refusal}")
    if args.save_safetensors:
        require_packages("--save-safetensors", "safetensors")


def model_arguments(args: argparse.Namespace, latent_shape: tuple[int, int, int]) -> dict:
    """The constructor arguments --model gets for latents of `latent_shape` (C, h, w): the data's size and
    channels, --num-classes, --multi-dilation-prob and --model-kwargs (which win)."""
    c, h, w = latent_shape
    kwargs = {"input_size": h if h == w else (h, w), "in_channels": c, "num_classes": args.num_classes}
    if args.multi_dilation_prob is not None:
        kwargs["multi_dilation_prob"] = args.multi_dilation_prob
    return {**kwargs, **args.model_kwargs}
