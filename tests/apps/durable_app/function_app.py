"""A sample Function App for the local host's tests: the same shape as the rotation hub's app.

Composition only, like the real app: one df.DFApp registering blueprints of starters (HTTP,
Event Grid, timer), orchestrators and activities.
"""

import azure.durable_functions as df
import azure.functions as func
from sample_activities import bp as activities
from sample_orchestrators import bp as orchestrators
from sample_starters import bp as starters

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(starters)
app.register_functions(orchestrators)
app.register_functions(activities)
