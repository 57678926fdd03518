"""``python -m ddpm_core`` is the ``ddpm`` command."""

import sys

from ddpm_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
