"""A ``TorchFunctionMode`` that counts host reads: the tensor calls that copy a value to the
host and, on a GPU, wait for the device (``item``, ``__bool__``, ``tolist``, ``cpu``, ...).

It sees every tensor method and function called inside ``with HostReads() as reads:``, so a
CPU run proves that a code path has no such read (what makes it sync-free on CUDA and
capturable in a CUDA graph). Import it only where torch is installed.
"""

from __future__ import annotations

import collections
import sys

import torch
from torch.overrides import TorchFunctionMode

HOST_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__",
              "__complex__", "__array__", "__repr__", "__format__", "__str__", "__len__"}


class HostReads(TorchFunctionMode):
    """Counts the host reads of the tensor calls made inside ``with HostReads() as reads:``."""

    def __init__(self, same_device_to: tuple[str, ...] = ()) -> None:
        """``same_device_to``: source files whose ``.to(device)`` calls move a tensor to
        another tensor's own device (no host read on CUDA, but "cpu" on the CPU)."""
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.same_device_to = same_device_to

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in HOST_READS or (name == "to" and _to_cpu(args[1:], kwargs) and not self._trusted()):
            self.counts[name] += 1
        return func(*args, **kwargs)


    def _trusted(self) -> bool:
        caller = sys._getframe(2).f_code.co_filename.replace("\\", "/")
        return any(caller.endswith(f) for f in self.same_device_to)


def _to_cpu(args, kwargs) -> bool:  # noqa: ANN001
    targets = [*args, kwargs.get("device")]
    return any(str(a) == "cpu" for a in targets if isinstance(a, (str, torch.device)))
