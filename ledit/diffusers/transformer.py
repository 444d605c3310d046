"""diffusers model classes for ledit's two model families, each a thin wrapper around the ledit model itself.

``LEDiTTransformer2DModel`` holds a ``ledit.models.LEDiT``, ``DiTBaselineTransformer2DModel`` a
``ledit.models.DiT`` (``pos_embed="sincos"`` is facebookresearch/DiT; the others are the paper's baselines).
The wrapped model is ``transformer.model``: one network, whose kernels, ``forward(x, t, y)``,
``forward_with_cfg`` and ``set_inference_options`` are ledit's, unchanged. The wrapper adds what diffusers
expects of a transformer: ``ConfigMixin`` (``config.json``), ``ModelMixin`` (``save_pretrained`` /
``from_pretrained`` with safetensors, dtype and device handling, gradient checkpointing) and a forward in
diffusers' convention, ``forward(hidden_states, timestep, class_labels, return_dict=True)``.

The config names the arguments it shares with diffusers' ``DiTTransformer2DModel`` as diffusers does
(``sample_size``, ``num_layers``, ``num_attention_heads``, ``attention_head_dim``, ``out_channels``,
``num_embeds_ada_norm``) and every other ledit option by its ledit name; ``ledit_arguments`` translates it to
the ledit constructor's arguments and ``diffusers_arguments`` back. Weights are stored under ``model.``: the
ledit state dict with a prefix.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ledit.models import DiT, LEDiT

try:
    from diffusers.models.modeling_outputs import Transformer2DModelOutput
except ImportError:  # diffusers < 0.30 keeps it beside Transformer2DModel
    from diffusers.models.transformers.transformer_2d import Transformer2DModelOutput

# ledit constructor argument -> its name in diffusers' DiTTransformer2DModel config (hidden_size and learn_sigma
# are carried as attention_head_dim and out_channels).
DIFFUSERS_NAMES = {
    "input_size": "sample_size",
    "patch_size": "patch_size",
    "in_channels": "in_channels",
    "depth": "num_layers",
    "num_heads": "num_attention_heads",
    "num_classes": "num_embeds_ada_norm",
}


def ledit_arguments(config: dict) -> dict:
    """A wrapper's config (diffusers' names for DiT's dimensions, ledit's for the rest) -> the ledit model's
    constructor arguments."""
    options = {key: value for key, value in config.items() if not key.startswith("_")}
    in_channels, out_channels = options["in_channels"], options.pop("out_channels")
    if out_channels not in (in_channels, 2 * in_channels):
        raise ValueError(
            f"out_channels={out_channels} must be in_channels={in_channels} (no learned variance) or 2 * "
            f"in_channels={2 * in_channels} (DiT's learned sigma)"
        )
    heads, head_dim = options["num_attention_heads"], options.pop("attention_head_dim")
    arguments = {ledit: options.pop(diffusers) for ledit, diffusers in DIFFUSERS_NAMES.items()}
    if isinstance(arguments["input_size"], (list, tuple)):
        arguments["input_size"] = tuple(arguments["input_size"])
    return {**arguments, "hidden_size": heads * head_dim, "learn_sigma": out_channels == 2 * in_channels, **options}


def diffusers_arguments(model) -> dict:
    """A ledit model's constructor arguments under the wrappers' config names (every option, sizes included)."""
    config = {key: value for key, value in model.config.items() if key != "name"}
    config.update(depth=len(model.blocks), num_heads=model.num_heads, patch_size=model.patch_size,
                  hidden_size=model.num_heads * model.head_dim)
    arguments = {diffusers: config.pop(ledit) for ledit, diffusers in DIFFUSERS_NAMES.items()}
    hidden_size, learn_sigma = config.pop("hidden_size"), config.pop("learn_sigma")
    return {**arguments, "attention_head_dim": hidden_size // arguments["num_attention_heads"],
            "out_channels": 2 * arguments["in_channels"] if learn_sigma else arguments["in_channels"], **config}


def _batched(value, name: str, batch: int, device: torch.device) -> torch.Tensor:
    """A (B,) tensor from a scalar, a 0-d or 1-element tensor (broadcast, as diffusers pipelines pass
    timesteps) or a (B,) tensor."""
    if value is None:
        raise ValueError(f"{name} is required: a (B,) tensor or a scalar for the whole batch")
    value = torch.as_tensor(value, device=device)
    if value.dim() == 0 or value.shape == (1,):
        value = value.reshape(1).expand(batch)
    return value


class LeditTransformer2DModel(ModelMixin, ConfigMixin):
    """What both wrappers share: the forward in diffusers' convention and gradient checkpointing."""

    _supports_gradient_checkpointing = True

    def forward(self, hidden_states: torch.Tensor, timestep=None, class_labels=None, return_dict: bool = True):
        """diffusers' transformer call. ``hidden_states`` (B, C, H, W) latents at any H x W divisible by the
        patch size; ``timestep`` a (B,) tensor or one value for the batch (DDPM steps 0..999, fractional
        allowed); ``class_labels`` (B,) integer labels, ``num_embeds_ada_norm`` being the null label.
        Returns ``Transformer2DModelOutput(sample=...)`` ((B, out_channels, H, W)) or, with ``return_dict=False``,
        the tuple ``(sample,)``. It is ledit's ``model(x, t, y)``, whose errors call these x, t and y."""
        batch, device = hidden_states.shape[0], hidden_states.device
        timestep = _batched(timestep, "timestep", batch, device)
        class_labels = _batched(class_labels, "class_labels", batch, device)
        sample = self.model(hidden_states, timestep, class_labels)
        return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)

    def enable_gradient_checkpointing(self, gradient_checkpointing_func=None) -> None:
        """Recompute each block in backward (ledit's ``set_grad_checkpointing``: torch.utils.checkpoint,
        non-reentrant)."""
        if gradient_checkpointing_func is not None:
            raise ValueError("ledit's models checkpoint with torch.utils.checkpoint (use_reentrant=False); "
                             "gradient_checkpointing_func cannot replace it, leave it None")
        self.model.set_grad_checkpointing(True)

    def disable_gradient_checkpointing(self) -> None:
        self.model.set_grad_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.model.grad_checkpointing


class LEDiTTransformer2DModel(LeditTransformer2DModel):
    """``ledit.models.LEDiT`` as a diffusers model. Defaults are LEDiT-XL/2's at 256x256 (32x32 latents).

    Args:
        sample_size: the training latent size, an int or [H, W] (ledit's ``input_size``; sets attention
            scaling's N_train). Inference runs at any size divisible by ``patch_size``.
        patch_size, in_channels: as diffusers' DiT.
        out_channels: ``2 * in_channels`` for DiT's learned variance (ledit's ``learn_sigma``), else
            ``in_channels``.
        num_layers, num_attention_heads, attention_head_dim: depth, heads, head dim (hidden = heads x head dim).
        mlp_ratio, class_dropout_prob: as ledit (diffusers' DiT fixes them at 4 and 0.1).
        num_embeds_ada_norm: the number of classes (ledit's ``num_classes``); this index is the null label.
        attention_schedule, scan, locality, locality_placement, conv_post_norm, multi_dilation_prob,
        attention_scaling: LEDiT's options, see ``ledit.models.LEDiT``.
    """

    @register_to_config
    def __init__(
        self,
        sample_size=32,
        patch_size: int = 2,
        in_channels: int = 4,
        out_channels: int = 8,
        num_layers: int = 28,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_embeds_ada_norm: int = 1000,
        attention_schedule="alternate",
        scan: str = "corner",
        locality: str = "dwconv",
        locality_placement: str = "stem",
        conv_post_norm: bool = False,
        multi_dilation_prob: float = 0.1,
        attention_scaling: bool = True,
    ):
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.model = LEDiT(**ledit_arguments(config))


class DiTBaselineTransformer2DModel(LeditTransformer2DModel):
    """``ledit.models.DiT`` as a diffusers model: facebookresearch/DiT with ``pos_embed="sincos"``, the paper's
    baselines with the other encodings. Defaults are DiT-XL/2's at 256x256. The shared arguments are as
    ``LEDiTTransformer2DModel``'s; pos_embed, sincos_mode, rope_method, rope_decouple and attention_scaling are
    ``ledit.models.DiT``'s options."""

    @register_to_config
    def __init__(
        self,
        sample_size=32,
        patch_size: int = 2,
        in_channels: int = 4,
        out_channels: int = 8,
        num_layers: int = 28,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_embeds_ada_norm: int = 1000,
        pos_embed: str = "sincos",
        sincos_mode: str = "extend",
        rope_method: str = "none",
        rope_decouple: bool = True,
        attention_scaling: bool = False,
    ):
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.model = DiT(**ledit_arguments(config))


TRANSFORMER_CLASSES = {"LEDiT": LEDiTTransformer2DModel, "DiT": DiTBaselineTransformer2DModel}


def transformer_for(model) -> LeditTransformer2DModel:
    """The diffusers model of a ledit ``LEDiT`` or ``DiT``, holding that very model (no copy of its weights):
    ``transformer_for(model).model is model``. Its train/eval mode is the model's."""
    family = getattr(model, "family", type(model).__name__)
    if family not in TRANSFORMER_CLASSES:
        raise TypeError(f"model must be a ledit LEDiT or DiT, got {type(model).__name__}")
    with torch.device("meta"):  # the wrapper's own model is replaced at once: build it without memory
        transformer = TRANSFORMER_CLASSES[family](**diffusers_arguments(model))
    transformer.model = model
    return transformer.train(model.training)
