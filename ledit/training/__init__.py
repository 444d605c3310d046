"""Training DiT and LEDiT: ``ledit train`` (torchrun, DDP/FSDP), checkpoints, EMA, ``ledit convert-dit``."""
