"""ledit inside diffusers: model classes, ``LEDiTPipeline`` and conversions both ways (docs/diffusers.md).

    from ledit.diffusers import LEDiTPipeline
    pipe = LEDiTPipeline.from_pretrained("ledit-pipeline")      # a folder from `ledit diffusers export`
    image = pipe(class_labels=[207], height=256, width=512).images[0]

The model classes wrap ledit's own models (``transformer.model`` is the ``ledit.models.LEDiT`` / ``DiT``, with
its kernels and ``forward(x, t, y)``); the pipeline runs ledit's guidance and inference add-ons over any diffusers
scheduler. Needs diffusers (``pip install 'ledit[diffusers]'``); ``import ledit`` never imports this package.
"""

from __future__ import annotations

# The oldest diffusers the tests pass with (older ones cannot save a model with today's safetensors);
# pyproject's [diffusers] extra records the newest tested as well.
MIN_DIFFUSERS = (0, 33)


def _check_diffusers() -> None:
    try:
        import diffusers
    except ImportError as error:
        raise ImportError("ledit.diffusers needs diffusers: pip install 'ledit[diffusers]'") from error
    found = tuple(int(part) for part in diffusers.__version__.split(".")[:2])
    if found < MIN_DIFFUSERS:
        raise ImportError(
            f"ledit.diffusers needs diffusers >= {'.'.join(map(str, MIN_DIFFUSERS))}, found {diffusers.__version__}: "
            f"pip install -U 'ledit[diffusers]'"
        )


_check_diffusers()

from ledit.diffusers.convert import (  # noqa: E402  (after the check, so a missing diffusers says how to fix it)
    dit_state_dict_from_diffusers,
    dit_state_dict_to_diffusers,
    dit_to_ledit,
    export_pipeline,
    ledit_scheduler,
    load_diffusers_dit,
)
from ledit.diffusers.pipeline import LEDiTPipeline  # noqa: E402
from ledit.diffusers.transformer import (  # noqa: E402
    DiTBaselineTransformer2DModel,
    LEDiTTransformer2DModel,
    LeditTransformer2DModel,
    transformer_for,
)

__all__ = [
    "DiTBaselineTransformer2DModel",
    "LEDiTPipeline",
    "LEDiTTransformer2DModel",
    "LeditTransformer2DModel",
    "dit_state_dict_from_diffusers",
    "dit_state_dict_to_diffusers",
    "dit_to_ledit",
    "export_pipeline",
    "ledit_scheduler",
    "load_diffusers_dit",
    "transformer_for",
]
