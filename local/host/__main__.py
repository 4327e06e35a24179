"""Entry point: ``python -m local.host [--script-root DIR] [--port N] [--data DIR] [--auth keys]``."""

from local.host.cli import main

raise SystemExit(main())
