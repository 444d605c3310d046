"""Model sizes and registry names, shared by the model classes (for ``model.config``) and the registries.

DiT's table: S/B/L/XL x patch 2/4/8, named ``<family>-<size>/<patch>`` ("DiT-XL/2", "LEDiT-B/4").
"""

from __future__ import annotations

from typing import Optional

# size -> (depth, hidden_size, num_heads), exactly as facebookresearch/DiT.
MODEL_SIZES = {
    "XL": (28, 1152, 16),
    "L": (24, 1024, 16),
    "B": (12, 768, 12),
    "S": (12, 384, 6),
}
PATCH_SIZES = (2, 4, 8)
# The constructor arguments a registry name fixes; the rest are free kwargs.
SIZE_ARGUMENTS = ("depth", "hidden_size", "patch_size", "num_heads")


def registry_name(family: str, size: str, patch_size: int) -> str:
    return f"{family}-{size}/{patch_size}"


def size_arguments(size: str, patch_size: int) -> dict:
    depth, hidden_size, num_heads = MODEL_SIZES[size]
    return {"depth": depth, "hidden_size": hidden_size, "patch_size": patch_size, "num_heads": num_heads}


def name_for_dimensions(family: str, depth: int, hidden_size: int, patch_size: int, num_heads: int) -> Optional[str]:
    """The registry name with these dimensions, or None for a custom size."""
    for size, dims in MODEL_SIZES.items():
        if dims == (depth, hidden_size, num_heads) and patch_size in PATCH_SIZES:
            return registry_name(family, size, patch_size)
    return None

# facebookresearch/DiT's constructor arguments, which every model here takes first.
DIT_ARGUMENTS = (
    "input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "mlp_ratio",
    "class_dropout_prob", "num_classes", "learn_sigma",
)
