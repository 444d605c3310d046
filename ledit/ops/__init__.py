"""Kernels with pure-PyTorch references: ``scan_attention`` and ``dwconv_modulate``.

Each op lives in a module of its own name, with its backends beside it (one file per backend, named after the op
and the backend, as csrc/<op>/ and ``torch.ops.ledit.<op>_*``):

    scan_attention.py                  public op, argument checks, reference, shared autograd registration
    scan_attention_compiled.py         ``cpu`` / ``cuda`` backends: ledit._C (csrc/scan_attention/)
    scan_attention_triton.py           ``triton`` backend: launchers and torch.library.triton_op registration
    scan_attention_triton_kernels.py   the @triton.jit kernels
    scan_attention_flex.py             ``flex`` backend: FlexAttention in 2D tile order (opt-in, the GPU baseline)
    dwconv_modulate*.py                the same four for dwconv_modulate (csrc/dwconv_modulate/)
    triton_launch.py                   the one place Triton kernels are launched (on the tensors' GPU; recordable
                                       for scripts/check_triton_compile.py)

``ops`` imports nothing else of ledit. Each op picks its backend per call (see ``ledit.ops.backends``);
``python -m ledit.info`` prints what is built and which backend each op would use for the representative call
in ``ledit.ops.examples``, and why.
"""

from ledit.ops import (  # each backend module registers its backends with its op when imported
    dwconv_modulate_compiled,  # noqa: F401
    dwconv_modulate_triton,  # noqa: F401
    scan_attention_compiled,  # noqa: F401
    scan_attention_flex,  # noqa: F401
    scan_attention_triton,  # noqa: F401
)
from ledit.ops.backends import BACKEND_ENV, BackendUnavailableError
from ledit.ops.dwconv_modulate import DWCONV_MODULATE_BACKENDS, dwconv_modulate, dwconv_modulate_reference
from ledit.ops.masks import CAUSAL_SCANS, SCANS, scan_mask, visible_pairs
from ledit.ops.scan_attention import SCAN_ATTENTION_BACKENDS, scan_attention, scan_attention_reference

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
