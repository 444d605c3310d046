"""ledit: LEDiT, a Diffusion Transformer without positional encoding that samples far above its training size."""

__version__ = "0.1.0"
