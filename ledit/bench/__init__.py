"""Benchmarks of ledit's kernels and models against SDPA, FlexAttention and unfused PyTorch (``ledit bench``).

Suites: ``attention`` (scan_attention), ``dwconv`` (dwconv_modulate), ``end_to_end`` (LEDiT vs reference backends
and DiT), ``packed`` (a packed train step of mixed sizes vs one size and vs padding; its records are end-to-end
records), each a ``plan(device, quick)`` of cases and a ``run_case`` returning comparison records
(``ledit.bench.records``). ``ledit.bench.readme`` turns the newest results files into the README table.
"""
