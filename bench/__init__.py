"""Benchmarks: ``python -m bench.classifier``, ``python -m bench.pipeline``, ``python -m bench.dashboard``.

Each prints human-readable progress on stderr and ONE JSON object as the last line of
stdout; each module's docstring documents its keys. Figures, machine and commands are
recorded in ``docs/performance.md``.
"""
