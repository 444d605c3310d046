"""Kernels with pure-PyTorch references: ``scan_attention`` and ``dwconv_modulate``.

``ops`` imports nothing else of ledit. Each op picks its backend per call (see ``ledit.ops.backends``);
``python -m ledit.info`` prints what is built and which backend each op would use, and why.
"""

from ledit.ops import (
    attention_kernels,  # noqa: F401  (registers the cpu/cuda scan_attention backends)
    attention_triton,  # noqa: F401  (registers the triton scan_attention backend)
    dwconv_kernels,  # noqa: F401  (registers the cpu/cuda dwconv_modulate backends)
    dwconv_triton,  # noqa: F401  (registers the triton dwconv_modulate backend)
)
from ledit.ops.attention import SCAN_ATTENTION_BACKENDS, scan_attention, scan_attention_reference
from ledit.ops.backends import BACKEND_ENV, BackendUnavailableError
from ledit.ops.dwconv import DWCONV_MODULATE_BACKENDS, dwconv_modulate, dwconv_modulate_reference
from ledit.ops.masks import CAUSAL_SCANS, SCANS, scan_mask, visible_pairs

__all__ = [
    "BACKEND_ENV",
    "BackendUnavailableError",
    "CAUSAL_SCANS",
    "DWCONV_MODULATE_BACKENDS",
    "SCANS",
    "SCAN_ATTENTION_BACKENDS",
    "dwconv_modulate",
    "dwconv_modulate_reference",
    "scan_attention",
    "scan_attention_reference",
    "scan_mask",
    "visible_pairs",
]
