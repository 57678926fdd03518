"""The ``ddpm`` command (also ``python -m ddpm_core``).

Subcommands::

    ddpm train --backend torch --preset mnist --out runs/mnist [--steps N] [--resume] ...
    ddpm train --preset mnist --out runs/cond --class-conditional [--label-dropout 0.1]
    ddpm train --preset mnist --out runs/mnist --tensorboard      (events in runs/mnist/tensorboard)
    ddpm train-classifier --data mnist --out runs/clf [--steps N] [--backend jax]
    ddpm sample --run runs/mnist --n 64 [--sampler ddpm|ddim --steps K --eta E] --out s.png
    ddpm progressive --run runs/mnist --n 8 --frames 10 --out progressive.png   (Figure 6)
    ddpm interpolate --run runs/mnist --pair 0 1 --t 500 --out interp.png       (Figure 8)
    ddpm plot --run runs/mnist [--out loss.png] [--json]          (the loss curve of log.csv)
    ddpm presets [--json]
    ddpm eval bpd --run runs/mnist --n 100 [--json]               (the bound, bits/dim)
    ddpm eval rate-distortion --run runs/mnist --n 100 --out rd   (Figure 5: rd.csv, rd.png)
    ddpm eval fid --run runs/mnist --n 500 [--sampler ddim --steps 50] [--json]
    ddpm eval shared-latent --run runs/mnist --t 250 500 750 --k 6 --out fig7.png (Figure 7)

The parser is in ``parser``, the subcommands in ``commands`` and ``evaluate``. Backends are
imported only when a subcommand needs one; a missing framework is reported with the extra
to install. This package imports neither framework.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ddpm_core.app.cli.backends import BackendUnavailable, load_backend
from ddpm_core.app.cli.commands import (
    cmd_export,
    cmd_import,
    cmd_interpolate,
    cmd_plot,
    cmd_presets,
    cmd_progressive,
    cmd_sample,
    cmd_train,
    cmd_train_classifier,
)
from ddpm_core.app.cli.evaluate import cmd_eval
from ddpm_core.app.cli.parser import build_parser
from ddpm_core.app.run.lock import RunLockedError

__all__ = ["BackendUnavailable", "build_parser", "load_backend", "main"]

_COMMANDS = {"sample": cmd_sample, "progressive": cmd_progressive,
             "interpolate": cmd_interpolate, "plot": cmd_plot, "presets": cmd_presets, "eval": cmd_eval,
             "import": cmd_import, "export": cmd_export,
             "train-classifier": cmd_train_classifier}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ddpm``; returns the exit status (2 for usage errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args, parser)
        return _COMMANDS[args.command](args)
    except (BackendUnavailable, FileNotFoundError, FileExistsError, IsADirectoryError,
            NotADirectoryError, PermissionError, ValueError) as e:
        print(f"ddpm {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (FloatingPointError, RunLockedError) as e:  # NaN/inf loss, a run in use
        print(f"ddpm {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, an I/O error: name the path and the cause
        print(f"ddpm {args.command}: error: {_os_error(e)}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # a device that is not there (CUDA, GPU)
        if not _device_error(e):
            raise
        print(f"ddpm {args.command}: error: {_one_line(e)}; choose another --device "
              "(cpu or auto)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddpm {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _os_error(e: OSError) -> str:
    import errno

    where = e.filename or "the output"
    if e.errno == errno.ENOSPC:
        return (f"{where}: no space left on the device; free space and run again (files "
                "are written atomically, so the previous ones are intact)")
    return f"{where}: {e.strerror or _one_line(e)}"


def _device_error(e: RuntimeError) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("cuda", "device", "gpu", "tpu", "backend"))
