"""Runs the app without Azure: the local Functions host and the local cloud.

Nothing outside local/, tests/ and benchmarks/ imports this package.
"""
