"""How a loaded version runs requests: runners, the worker pool, the clock, batching, placement.

Imports only downward: ``platforms``, ``protos``.
"""
