"""``python -m ddpm_core`` is the ``ddpm`` command (``ddpm_core.app.cli``)."""

import sys

from ddpm_core.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
