"""DiT's model table for both families: ``DiT_models["DiT-XL/2"]``, ``LEDiT_models["LEDiT-XL/2"]``, ...

Each entry is a constructor taking the remaining keyword arguments, as in facebookresearch/DiT.
``build_model`` also accepts the bare class names "DiT" and "LEDiT" with explicit sizes, which is how
``model.config`` names a model of a custom size.
"""

from __future__ import annotations

from ledit.models.configs import MODEL_SIZES, PATCH_SIZES, SIZE_ARGUMENTS, registry_name, size_arguments
from ledit.models.dit import DiT
from ledit.models.ledit import LEDiT


def _constructor(cls, size: str, patch_size: int):
    name = registry_name(cls.family, size, patch_size)
    fixed = size_arguments(size, patch_size)

    def construct(**kwargs):
        clash = sorted(set(kwargs) & set(SIZE_ARGUMENTS))
        if clash:
            raise TypeError(
                f"{name} fixes {', '.join(SIZE_ARGUMENTS)}; got {', '.join(clash)}. For a custom size use the model "
                f"name {cls.family!r} and give all four (build_model({cls.family!r}, depth=..., hidden_size=..., "
                "patch_size=..., num_heads=...))"
            )
        return cls(**fixed, **kwargs)

    construct.__name__ = construct.__qualname__ = f"{cls.family}_{size}_{patch_size}"
    construct.__doc__ = f"{name}: depth {fixed['depth']}, hidden {fixed['hidden_size']}, {fixed['num_heads']} heads."
    return construct


def _registry(cls) -> dict:
    return {
        registry_name(cls.family, size, patch): _constructor(cls, size, patch)
        for size in MODEL_SIZES
        for patch in PATCH_SIZES
    }


DiT_models = _registry(DiT)
LEDiT_models = _registry(LEDiT)
MODEL_CLASSES = {"DiT": DiT, "LEDiT": LEDiT}
# Every name build_model takes: the registries' sizes, then the classes (custom sizes).
MODEL_NAMES = (*LEDiT_models, *DiT_models, *MODEL_CLASSES)


def build_model(name: str, **kwargs):
    """Build a model by registry name ("LEDiT-XL/2", "DiT-B/4", ...) or class name ("DiT", "LEDiT")."""
    if name in LEDiT_models:
        return LEDiT_models[name](**kwargs)
    if name in DiT_models:
        return DiT_models[name](**kwargs)
    if name in MODEL_CLASSES:
        return MODEL_CLASSES[name](**kwargs)
    raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(MODEL_NAMES)}")
