"""LEDiT and its DiT baselines, drop-in for facebookresearch/DiT's models at any height x width.

``models`` knows nothing of diffusion, training or the CLI; attention runs through ``ledit.ops.scan_attention``
and the dwconv locality through ``ledit.ops.dwconv_modulate``, so the compiled and Triton backends plug in.
"""

from ledit.models.backbone import DiffusionTransformer
from ledit.models.dit import POS_EMBEDS, DiT
from ledit.models.dit_checkpoint import CheckpointLoadReport, from_dit_checkpoint
from ledit.models.inference import INFERENCE_TEMPERATURES, NUM_TRAIN_TIMESTEPS, ROPE_DYNAMIC, InferenceOptions
from ledit.models.ledit import ATTENTION_SCHEDULES, LEDiT, causal_block_indices
from ledit.models.locality import LOCALITIES, LOCALITY_PLACEMENTS
from ledit.models.registry import MODEL_NAMES, DiT_models, LEDiT_models, build_model
from ledit.models.rope import ROPE_METHODS, dynamic_rope_frequencies, rope_frequencies
from ledit.models.scaling import jin_softmax_scale, temperature_softmax_scale

__all__ = [
    "ATTENTION_SCHEDULES",
    "CheckpointLoadReport",
    "DiT",
    "DiT_models",
    "DiffusionTransformer",
    "INFERENCE_TEMPERATURES",
    "InferenceOptions",
    "LEDiT",
    "LEDiT_models",
    "LOCALITIES",
    "LOCALITY_PLACEMENTS",
    "MODEL_NAMES",
    "NUM_TRAIN_TIMESTEPS",
    "POS_EMBEDS",
    "ROPE_DYNAMIC",
    "ROPE_METHODS",
    "build_model",
    "causal_block_indices",
    "dynamic_rope_frequencies",
    "from_dit_checkpoint",
    "jin_softmax_scale",
    "rope_frequencies",
    "temperature_softmax_scale",
]
