"""A Function App for the orchestrator's tests: the real rotate_secret, scripted activities.

The local host puts this folder first on sys.path and runs from the repository root with the
root on PYTHONPATH, so ``orchestrators`` and ``rotation`` import from the repository itself.
"""

import azure.durable_functions as df
from scripted_activities import bp as scripted_activities

from orchestrators import rotate_secret

app = df.DFApp()
app.register_functions(rotate_secret.bp)
app.register_functions(scripted_activities)
