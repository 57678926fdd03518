"""Progress of long jobs on stderr, with tqdm: a bar on a terminal, plain lines elsewhere.

On a terminal :class:`Progress` is a tqdm bar. When stderr is not a terminal (CI, a log
file, a pipe) it writes tqdm's own status text as a plain line every ``every`` percent (and
at the end), never a carriage return. Disabled, it does nothing; the ``ddpm`` command
disables it with ``--no-progress`` (``--quiet``) and in processes other than the main one.

>>> import io
>>> out = io.StringIO()
>>> with Progress(4, "sampling", unit="step", every=50, stream=out) as p:
...     for _ in range(4):
...         p.update()
>>> [line.split(" [")[0] for line in out.getvalue().splitlines()]
['sampling:  50% 2/4', 'sampling: 100% 4/4']
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "require_tqdm"]


def require_tqdm() -> Any:
    """The ``tqdm`` module, or a one-line ImportError naming the extra that installs it."""
    try:
        import tqdm
    except ImportError:
        raise ImportError('progress bars need tqdm: pip install "ddpm-core[data]" (or pip install tqdm)') from None
    return tqdm


class Progress:
    """Progress of ``total`` units of work (steps, samples, images) named ``desc``.

    ``update(n, **postfix)`` counts ``n`` more units and shows ``postfix`` (e.g. the loss);
    ``every`` is the percentage between two plain lines off a terminal. ``stream`` defaults
    to stderr; ``tty`` (default: whether ``stream`` is a terminal) picks the bar.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "it", enabled: bool = True, every: float = 10.0,
                 stream: TextIO | None = None, tty: bool | None = None, initial: int = 0) -> None:
        self.total, self.desc, self.unit, self.enabled = int(total), desc, unit, bool(enabled) and total > 0
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.every, self.n, self.initial, self.postfix = float(every), int(initial), int(initial), ""
        self._bar: Any = None
        self._t0 = time.perf_counter()
        self._next = self._threshold(self.n)
        if self.enabled and self.tty:
            self._bar = require_tqdm().tqdm(total=self.total, desc=desc, unit=unit, initial=initial,
                                            file=self.stream, dynamic_ncols=True, leave=True)
        elif self.enabled:
            require_tqdm()

    def _threshold(self, n: int) -> int:
        """The first count at or after which the next plain line is due."""
        step = max(1, round(self.total * self.every / 100.0))
        return min(self.total, (n // step + 1) * step)

    def update(self, n: int = 1, **postfix: Any) -> None:
        if not self.enabled:
            return
        self.n = min(self.total, self.n + int(n))
        if postfix:
            self.postfix = ", ".join(f"{k}={v}" for k, v in postfix.items())
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix_str(self.postfix, refresh=False)
            self._bar.update(int(n))
        elif self.n >= self._next:
            self._line()
            self._next = self._threshold(self.n)

    def _line(self) -> None:
        tqdm = require_tqdm()
        text = tqdm.tqdm.format_meter(self.n, self.total, time.perf_counter() - self._t0, prefix=self.desc,
                                      unit=self.unit, postfix=self.postfix or None, ncols=0,
                                      initial=self.initial)
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
