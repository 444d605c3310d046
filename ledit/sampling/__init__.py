"""Sampling from trained DiT/LEDiT checkpoints at any height x width: ``ledit sample`` and ``ledit sample-ddp``."""
