"""Entry point of ``python -m local.cloud``."""

import sys

from local.cloud.cli import main

sys.exit(main())
