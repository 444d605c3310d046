"""The models the demo compares. Variants that differ only in how they are sampled share trained weights."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledit.models import build_model


@dataclass(frozen=True)
class Variant:
    key: str  # the name on the command line and in results.json
    label: str  # the name in the table and the figure
    family: str  # "LEDiT" or "DiT" (ledit.models.build_model)
    options: dict = field(default_factory=dict)  # constructor options of the trained model
    sampling_options: dict = field(default_factory=dict)  # options changed at sampling time, same weights

    @property
    def weights_key(self) -> str:
        """Variants with equal family and training options are one trained model."""
        options = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.family}({options})"

    def build(self, size: dict, for_sampling: bool = False):
        options = {**self.options, **(self.sampling_options if for_sampling else {})}
        return build_model(self.family, **size, **options)


VARIANTS = {
    variant.key: variant
    for variant in (
        # LEDiT with the library defaults (corner scan, alternate schedule, dwconv locality, multi-dilation 0.1,
        # Jin et al. attention scaling at other token counts) but its gated dwconv in every block, not only after
        # patchify: at 4 blocks of 64 channels, one conv on the noisy stem leaves the later blocks without local
        # offsets, and objects come out as blobs cut at the patch seams (docs/demo.md, "How the recipe was chosen").
        Variant("ledit", "LEDiT", "LEDiT", {"locality_placement": "every_block"}),
        Variant("dit-rope", "DiT 2D RoPE", "DiT", {"pos_embed": "rope"}),
        Variant("dit-rope-yarn", "DiT 2D RoPE + YaRN", "DiT", {"pos_embed": "rope"}, {"rope_method": "yarn"}),
        Variant("dit-sincos", "DiT sin-cos PE", "DiT", {"pos_embed": "sincos"}),
    )
}


def parse_variants(text: str) -> list[Variant]:
    """``"ledit,dit-rope"`` -> the Variants, in the given order."""
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in VARIANTS]
    if unknown or not keys:
        raise ValueError(f"--models: unknown {unknown or 'empty list'}; choose from {', '.join(VARIANTS)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"--models lists a model twice: {text!r}")
    return [VARIANTS[key] for key in keys]
