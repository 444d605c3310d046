"""Backend registry: every op has an ordered list of implementations, each of which can say why it cannot run.

A backend is chosen per call, in the order its op lists for the tensors' device type
(CUDA: ``cuda`` -> ``triton`` -> ``reference``; CPU: ``cpu`` -> ``reference``), unless the caller names one
(``backend=`` or the ``LEDIT_BACKEND`` environment variable). A named backend that cannot run raises an error
carrying its reason; it is never silently replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch

# A can_run check returns None when the backend can run the call, else a sentence saying why not.
CanRun = Callable[..., Optional[str]]

BACKEND_ENV = "LEDIT_BACKEND"


class BackendUnavailableError(RuntimeError):
    """A backend was requested (by ``backend=`` or LEDIT_BACKEND) that cannot run this call."""


@dataclass(frozen=True)
class Backend:
    name: str
    fn: Callable
    can_run: CanRun


class OpBackends:
    """The implementations of one op and the automatic order they are tried in, per device type."""

    def __init__(self, op_name: str, order: dict[str, tuple[str, ...]]):
        self.op_name = op_name
        self.order = order
        self._backends: dict[str, Backend] = {}

    def register(self, name: str, fn: Callable, can_run: CanRun) -> None:
        self._backends[name] = Backend(name, fn, can_run)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._backends)

    def explain(self, device_type: str, *args, **kwargs) -> list[tuple[str, Optional[str]]]:
        """(backend, reason it cannot run or None) for every registered backend, automatic order first."""
        ordered = [n for n in self.order.get(device_type, ()) if n in self._backends]
        ordered += [n for n in self._backends if n not in ordered]
        result = []
        for name in ordered:
            reason = self._backends[name].can_run(*args, **kwargs)
            if reason is None and name not in self.order.get(device_type, ()):
                reason = f"not tried automatically on {device_type}; request it with backend={name!r}"
            result.append((name, reason))
        return result

    def choose(self, requested: Optional[str], device_type: str, *args, **kwargs) -> Backend:
        requested = requested or os.environ.get(BACKEND_ENV) or None
        if requested is not None:
            backend = self._backends.get(requested)
            if backend is None:
                raise ValueError(
                    f"{self.op_name}: unknown backend={requested!r}; valid backends: {', '.join(self.names)} "
                    f"(or unset {BACKEND_ENV} / pass backend=None to choose automatically)"
                )
            reason = backend.can_run(*args, **kwargs)
            if reason is not None:
                raise BackendUnavailableError(
                    f"{self.op_name}: backend {requested!r} cannot run this call: {reason}. "
                    f"Pass backend=None (and unset {BACKEND_ENV}) to fall back automatically."
                )
            return backend
        for name in self.order.get(device_type, ()):
            backend = self._backends.get(name)
            if backend is not None and backend.can_run(*args, **kwargs) is None:
                return backend
        reasons = "; ".join(f"{n}: {r}" for n, r in self.explain(device_type, *args, **kwargs))
        raise BackendUnavailableError(f"{self.op_name}: no backend can run this call ({reasons})")


def device_order(cuda: tuple[str, ...] = ("cuda", "triton", "reference"),
                 cpu: tuple[str, ...] = ("cpu", "reference")) -> dict[str, tuple[str, ...]]:
    """The automatic order every op uses: a device's own compiled kernels, then (CUDA) Triton, then the reference."""
    return {"cuda": cuda, "cpu": cpu}


def tensors_device_type(*tensors: Optional[torch.Tensor]) -> str:
    return next(t.device.type for t in tensors if t is not None)
