"""kvrotate: the operators' command line for the Key Vault Rotation Hub's HTTP API.

It runs on an operator's machine and talks to the hub over HTTP only; it is installed as a
console script (pyproject.toml) and never deployed with the Function App (.funcignore).
"""
