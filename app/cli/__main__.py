"""``python -m ddpm_core.app.cli`` is the ``ddpm`` command."""

import sys

from ddpm_core.app.cli import main

sys.exit(main())
