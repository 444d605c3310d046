"""Sampling from trained DiT/LEDiT checkpoints at any height x width: ``ledit sample`` and ``ledit sample-ddp``,
with the inference add-ons for sizes above the training one (``ledit.sampling.addons``)."""
