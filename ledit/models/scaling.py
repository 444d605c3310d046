"""Softmax temperatures for sampling at a token count other than the training one.

The models ask one overridable method, ``softmax_scale(block_index, grid, t)``, for each block's scale; the
functions here are the rules it can use (``InferenceOptions.temperature_full`` / ``temperature_causal`` pick
one per layer kind). N = token counts, d = head dim; every rule equals the plain 1/sqrt(d) at N_test = N_train.

- ``jin`` (Jin et al., NeurIPS 2023, "entropy-invariant" scaling): sqrt(log_{N_train}(N_test)) / sqrt(d).
- ``lumina`` (Lumina-Next's proportional attention, arXiv 2406.18583 §3.3; its code computes
  ``sqrt(log(seqlen, base_seqlen) / head_dim)``): sqrt(log_{N_train}(N_test) / d) — **the same number as
  Jin's rule**. Lumina-Next adopts Jin's formula for image tokens; the name is kept so the paper's setting can be
  named, and a test checks the two agree exactly.
- ``fitv2-log``: log_{N_train}(N_test) / sqrt(d), the "log-n" scaling (logits multiplied by the log ratio
  itself, not its square root; Chiang & Cholak 2022, Su 2021), our reading of FiTv2's log attention scale
  [the FiT repository's sampling code carries no attention scale to check it against]. Twice as strong as Jin's
  in log space: at N_test = N_train^2 it multiplies the logits by 2 where Jin's multiplies them by sqrt(2).
- ``none``: 1/sqrt(d) at every token count.
"""

from __future__ import annotations

import math
from typing import Optional

from ledit.models.inference import INFERENCE_TEMPERATURES


def jin_softmax_scale(n_train: int, n_test: int, head_dim: int) -> Optional[float]:
    """sqrt(log_{n_train}(n_test) / head_dim); None (the default 1/sqrt(d)) if a count is 1 and log is undefined."""
    if n_train <= 1 or n_test <= 1:
        return None
    return math.sqrt(math.log(n_test) / math.log(n_train) / head_dim)


def log_n_softmax_scale(n_train: int, n_test: int, head_dim: int) -> Optional[float]:
    """log_{n_train}(n_test) / sqrt(head_dim) (FiTv2's "log" scale as we read it); None if a count is 1."""
    if n_train <= 1 or n_test <= 1:
        return None
    return math.log(n_test) / math.log(n_train) / math.sqrt(head_dim)


def temperature_softmax_scale(rule: str, n_train: int, n_test: int, head_dim: int) -> Optional[float]:
    """The softmax scale of temperature ``rule`` (one of ``INFERENCE_TEMPERATURES``).

    None means the plain 1/sqrt(head_dim). "lumina" is Jin's formula (see the module docstring).
    """
    if rule in ("jin", "lumina"):
        return jin_softmax_scale(n_train, n_test, head_dim)
    if rule == "fitv2-log":
        return log_n_softmax_scale(n_train, n_test, head_dim)
    if rule == "none":
        return None
    raise ValueError(f"unknown temperature rule {rule!r}; valid: {', '.join(map(repr, INFERENCE_TEMPERATURES))}")
