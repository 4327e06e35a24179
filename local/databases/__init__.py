"""Throwaway database servers for local runs, tests and benchmarks: the real targets of rotations.

Each module starts one kind of server from the operating system's packages in a temporary
directory, on 127.0.0.1 and a free port, with TLS and a statement log, and follows the contract
in ``base.LocalDatabase`` so every scenario can run against each of them.
"""
