"""Softmax temperatures for sampling at a token count other than the training one.

The models ask one overridable method, ``softmax_scale(block_index, grid, t)``, for each block's scale; the
functions here are the rules it can use. Jin et al. (NeurIPS 2023) keep attention entropy stable when the
number of tokens changes: 1/sqrt(d) becomes sqrt(log_{N_train}(N_test) / d), N = token counts.
"""

from __future__ import annotations

import math
from typing import Optional


def jin_softmax_scale(n_train: int, n_test: int, head_dim: int) -> Optional[float]:
    """sqrt(log_{n_train}(n_test) / head_dim); None (the default 1/sqrt(d)) if a count is 1 and log is undefined."""
    if n_train <= 1 or n_test <= 1:
        return None
    return math.sqrt(math.log(n_test) / math.log(n_train) / head_dim)
