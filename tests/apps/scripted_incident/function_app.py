"""A Function App for the incident orchestrator's tests: the real incident and rotate_secret
orchestrators, the scripted rotation activities (tests/apps/scripted_rotation) and a scripted
listing.

The local host puts this folder first on sys.path and runs from the repository root with the
root on PYTHONPATH; the scripted rotation activities live in the sibling folder.
"""

import sys
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "scripted_rotation"))

import azure.durable_functions as df
from scripted_activities import bp as scripted_activities
from scripted_listing import bp as scripted_listing

from orchestrators import incident, rotate_secret

app = df.DFApp()
app.register_functions(rotate_secret.bp)
app.register_functions(incident.bp)
app.register_functions(scripted_activities)
app.register_functions(scripted_listing)
