"""The built-in demo (``ledit demo``): tiny LEDiT and DiT baselines trained on procedural images on a CPU,
compared at and above their training resolution with a weight-free metric (SWD)."""
