"""The local cloud: Key Vault, managed identity, Event Grid, App Service (ARM), storage accounts (ARM,
their blob endpoints served by Azurite), Microsoft Graph (applications) and Entra ID token endpoints
that the real Azure SDK clients use unchanged, through an HTTPS proxy with a locally generated CA.

Run it with ``python -m local.cloud``; start it from tests with ``local.cloud.process.LocalCloud``.
See README.md in this folder.
"""
