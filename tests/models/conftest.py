import pytest
from model_helpers import TINY, randomize_


@pytest.fixture
def tiny():
    """tiny(name, randomized=True, **options) -> a tiny model ("DiT" / "LEDiT") with random parameters."""
    from ledit.models import build_model

    def make(name, randomized=True, **options):
        model = build_model(name, **{**TINY, **options})
        return randomize_(model) if randomized else model

    return make
