"""Conversions between ledit and diffusers, both ways.

ledit -> diffusers: ``export_pipeline`` writes a ``LEDiTPipeline`` folder (transformer, scheduler, optionally a
VAE) that ``LEDiTPipeline.from_pretrained`` loads; ``transformer_for(model).save_pretrained(folder)`` writes the
transformer alone.

diffusers -> ledit: a folder of diffusers' ``DiTTransformer2DModel`` (the format of the published DiT-XL-2
weights, whose config still says ``Transformer2DModel``) becomes facebookresearch/DiT's state dict
(``dit_state_dict_from_diffusers``), and from there a ledit DiT or, by the paper's fine-tuning initialisation, a
LEDiT (``dit_to_ledit``, as ``ledit convert-dit`` does for DiT's own files). A folder of one of ledit's own
wrappers loads with ``from_pretrained``; its ``.model`` is the ledit model.

diffusers' DiT keeps a copy of the timestep and label embedders in every block (block 0's also conditions the
final layer) and splits DiT's fused qkv projection into to_q, to_k, to_v; the maps below do exactly that and its
inverse, so weights round-trip bit for bit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from ledit.checkpoint import CheckpointError, checkpoint_weights, load_checkpoint, load_weights_into
from ledit.models import build_model, from_dit_checkpoint
from ledit.models.configs import name_for_dimensions
from ledit.training.convert_dit import dit_dimensions

# The class names a diffusers DiT transformer folder carries (the published weights predate DiTTransformer2DModel).
DIT_CLASS_NAMES = ("DiTTransformer2DModel", "Transformer2DModel")
# facebookresearch/DiT key -> diffusers key, per block and for the rest.
_BLOCK_KEYS = {
    "adaLN_modulation.1": "norm1.linear",
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
}
_EMBEDDER_KEYS = {  # copied into every block by diffusers
    "t_embedder.mlp.0": "norm1.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "norm1.emb.timestep_embedder.linear_2",
}
_LABEL_TABLE = ("y_embedder.embedding_table.weight", "norm1.emb.class_embedder.embedding_table.weight")
_TOP_KEYS = {
    "x_embedder.proj": "pos_embed.proj",
    "final_layer.adaLN_modulation.1": "proj_out_1",
    "final_layer.linear": "proj_out_2",
}
_QKV = ("to_q", "to_k", "to_v")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _linear(mapping: dict) -> dict:
    """{source module: target module} -> the same for their weight and bias keys."""
    return {f"{src}.{p}": f"{dst}.{p}" for src, dst in mapping.items() for p in ("weight", "bias")}


def _num_blocks(state: dict, prefix: str) -> int:
    return len({key.split(".")[1] for key in state if key.startswith(prefix)})


def dit_state_dict_to_diffusers(state: dict) -> dict:
    """facebookresearch/DiT's state dict (ledit's DiT keys) -> diffusers' DiTTransformer2DModel keys. DiT's frozen
    ``pos_embed`` is dropped: diffusers recomputes the same sin-cos table."""
    out = {dst: state[src] for src, dst in _linear(_TOP_KEYS).items()}
    for i in range(_num_blocks(state, "blocks.")):
        block = f"transformer_blocks.{i}"
        out.update({f"{block}.{dst}": state[f"blocks.{i}.{src}"] for src, dst in _linear(_BLOCK_KEYS).items()})
        out.update({f"{block}.{dst}": state[src] for src, dst in _linear(_EMBEDDER_KEYS).items()})
        out[f"{block}.{_LABEL_TABLE[1]}"] = state[_LABEL_TABLE[0]]
        for p in ("weight", "bias"):
            for name, part in zip(_QKV, state[f"blocks.{i}.attn.qkv.{p}"].chunk(3, dim=0)):
                out[f"{block}.attn1.{name}.{p}"] = part.clone()
    return out


def dit_state_dict_from_diffusers(state: dict) -> dict:
    """diffusers' DiTTransformer2DModel state dict -> facebookresearch/DiT's (ledit's DiT keys, without the
    sin-cos ``pos_embed``, which ledit computes). Every block's copy of the embedders must equal block 0's, as in
    weights converted from DiT; a model whose copies were trained apart has no exact ledit form (an error)."""
    blocks = _num_blocks(state, "transformer_blocks.")
    if blocks == 0 or "pos_embed.proj.weight" not in state:
        raise ValueError("not a diffusers DiT transformer state dict: no transformer_blocks.* or pos_embed.proj.* keys")
    try:
        out = {src: state[dst] for src, dst in _linear(_TOP_KEYS).items()}
        shared = {**_linear(_EMBEDDER_KEYS), _LABEL_TABLE[0]: _LABEL_TABLE[1]}
        out.update({src: state[f"transformer_blocks.0.{dst}"] for src, dst in shared.items()})
        for i in range(blocks):
            block = f"transformer_blocks.{i}"
            for src, dst in shared.items():
                if not torch.equal(state[f"{block}.{dst}"], out[src]):
                    raise ValueError(
                        f"{block}.{dst} differs from block 0's copy: ledit's DiT has one timestep and label "
                        f"embedder, so only a DiT whose blocks share theirs (as the published weights do) converts "
                        f"exactly"
                    )
            out.update({f"blocks.{i}.{src}": state[f"{block}.{dst}"] for src, dst in _linear(_BLOCK_KEYS).items()})
            for p in ("weight", "bias"):
                parts = [state[f"{block}.attn1.{name}.{p}"] for name in _QKV]
                out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat(parts, dim=0)
    except KeyError as error:
        raise ValueError(f"not a diffusers DiT transformer (adaLN-Zero, biased attention): it lacks {error}") from None
    unused = sorted(set(state) - set(dit_state_dict_to_diffusers(out)) - {"pos_embed.pos_embed"})
    if unused:
        raise ValueError(f"diffusers DiT state dict has keys ledit's DiT has no place for: {unused[:8]}")
    return out


def _read_weights(folder: Path) -> dict:
    """A diffusers model folder's state dict (safetensors, a safetensors index of shards, or a .bin)."""
    from safetensors.torch import load_file

    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {key: value for shard in shards for key, value in load_file(str(folder / shard)).items()}
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if name.endswith(".safetensors"):
                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} has no weights: expected one of {', '.join(WEIGHT_FILES)} (or a sharded index)")


def transformer_folder(path: str | os.PathLike) -> Path:
    """The transformer folder of ``path``: itself (it holds config.json) or, for a pipeline folder (it holds
    model_index.json), its ``transformer/``."""
    folder = Path(path)
    if (folder / "model_index.json").is_file():
        folder = folder / "transformer"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{path} is neither a diffusers model folder (config.json) nor a pipeline folder "
                                "(model_index.json with a transformer/ folder)")
    return folder


def folder_class_name(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text()).get("_class_name", "")


def load_diffusers_dit(path: str | os.PathLike) -> tuple[dict, dict]:
    """(facebookresearch/DiT state dict, diffusers config) of a DiTTransformer2DModel folder, or of a pipeline
    folder holding one (the published DiT-XL-2 layout). Nothing is downloaded."""
    folder = transformer_folder(path)
    config = json.loads((folder / "config.json").read_text())
    if config.get("_class_name") not in DIT_CLASS_NAMES or config.get("norm_type") != "ada_norm_zero":
        raise ValueError(f"{folder} holds a {config.get('_class_name')!r} with norm_type {config.get('norm_type')!r}; "
                         f"expected a DiT transformer ({' or '.join(DIT_CLASS_NAMES)}, norm_type 'ada_norm_zero')")
    if config.get("activation_fn", "gelu-approximate") != "gelu-approximate":
        raise ValueError(f"{folder}: activation_fn {config['activation_fn']!r}, DiT's is 'gelu-approximate'")
    return dit_state_dict_from_diffusers(_read_weights(folder)), config


def ledit_name(name: str | None, family: str, depth: int, hidden_size: int, patch_size: int,
               num_heads: int) -> tuple[str, dict]:
    """(model name, size arguments it needs) for a model of these dimensions: ``name`` when it is a registry
    name; the registry name of ``family`` (or of ``name`` when it is a class name, "DiT" / "LEDiT") at these
    dimensions; else the class name with explicit sizes."""
    if name not in (None, "DiT", "LEDiT"):
        return name, {}
    family = name or family
    registry = name_for_dimensions(family, depth, hidden_size, patch_size, num_heads)
    if registry is not None:
        return registry, {}
    return family, {"depth": depth, "hidden_size": hidden_size, "patch_size": patch_size, "num_heads": num_heads}


def dit_model_arguments(state: dict, config: dict, name: str | None, kwargs: dict) -> tuple[str, dict]:
    """The ledit model name and constructor arguments for a diffusers DiT (sizes from its config and weights)."""
    dims = dict(depth=config["num_layers"], hidden_size=config["num_attention_heads"] * config["attention_head_dim"],
                patch_size=config["patch_size"], num_heads=config["num_attention_heads"])
    name, sizes = ledit_name(name, "LEDiT", **dims)
    return name, {**dit_dimensions(state), "input_size": config["sample_size"], **sizes, **kwargs}


def dit_to_ledit(path: str | os.PathLike, name: str | None = None, **kwargs):
    """A diffusers DiT folder (transformer or pipeline) -> (ledit model, ``CheckpointLoadReport``).

    ``name`` is any ledit model name: default the LEDiT of the DiT's size (e.g. "LEDiT-XL/2"): the paper's
    fine-tuning start, DiT's weights with ``pos_embed`` dropped and the locality module added as the identity.
    "DiT-XL/2" (or "DiT") gives facebookresearch's DiT itself. ``kwargs`` are the model's other options
    (``input_size`` defaults to the config's ``sample_size``)."""
    state, config = load_diffusers_dit(path)
    name, arguments = dit_model_arguments(state, config, name, kwargs)
    return from_dit_checkpoint(state, name=name, **arguments)


def ledit_scheduler(kind: str = "ddim", learn_sigma: bool = True):
    """A diffusers scheduler for DiT's process (1000 steps, linear betas 1e-4..0.02, no clipping): "ddim"
    (``DDIMScheduler``; its "leading" spacing is ledit's ``ddimN`` respacing when N divides 1000) or "ddpm"
    (``DDPMScheduler`` with the model's learned variance and "linspace" spacing: ledit's ``N`` respacing)."""
    process = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                   clip_sample=False, prediction_type="epsilon")
    if kind == "ddim":
        return DDIMScheduler(**process, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    if kind == "ddpm":
        variance = "learned_range" if learn_sigma else "fixed_large"
        return DDPMScheduler(**process, variance_type=variance, timestep_spacing="linspace")
    raise ValueError(f"scheduler must be 'ddim' or 'ddpm', got {kind!r}")


def export_pipeline(model, folder: str | os.PathLike, vae=None, scheduler=None, id2label: dict | None = None):
    """Write a ``LEDiTPipeline`` folder for a ledit model: transformer (safetensors), scheduler (default
    ``ledit_scheduler("ddim")``), the ``AutoencoderKL`` ``vae`` (None for a pixel-space model) and
    ``id2label`` ({class id: "name, other name"}) in model_index.json. Returns the pipeline."""
    from ledit.diffusers.pipeline import LEDiTPipeline
    from ledit.diffusers.transformer import transformer_for

    if vae is None and model.in_channels != 3:
        raise ValueError(f"the model denoises {model.in_channels}-channel latents: pass the AutoencoderKL it was "
                         "trained with as vae (None is for pixel-space models)")
    if vae is not None and model.in_channels != vae.config.latent_channels:
        raise ValueError(f"the model denoises {model.in_channels} channels but the vae has "
                         f"{vae.config.latent_channels} latent channels")
    scheduler = scheduler if scheduler is not None else ledit_scheduler("ddim", model.learn_sigma)
    pipe = LEDiTPipeline(transformer=transformer_for(model.eval()), vae=vae, scheduler=scheduler, id2label=id2label)
    pipe.save_pretrained(folder)
    return pipe


def model_from_checkpoint(path: str | os.PathLike):
    """The model of a ledit checkpoint (``ledit train``, ``ledit convert-dit``, ``ledit diffusers import``), with
    its EMA weights, in eval mode on the CPU."""
    state = load_checkpoint(path)
    config = state.get("config")
    if config is None:
        raise CheckpointError(f"{path} carries no model config (a raw state dict?): convert facebookresearch/DiT "
                              "files with `ledit convert-dit` first, or save a ledit checkpoint")
    weights, which = checkpoint_weights(state, str(path))
    model = build_model(**config)
    load_weights_into(model, weights, f"{path} ({which} weights)")
    return model.eval()


def ledit_checkpoint(model, **args) -> dict:
    """A ledit checkpoint of ``model`` (as ``ledit convert-dit`` writes one: its weights as model and EMA, no
    optimizer state, step 0), ``args`` recording where it came from."""
    weights = model.state_dict()
    return {"model": weights, "ema": weights, "opt": None, "step": 0, "config": model.config, "args": args}
