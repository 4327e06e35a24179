"""``python -m kvrotate``: the same as the ``kvrotate`` console script."""

from kvrotate.main import run

run()
