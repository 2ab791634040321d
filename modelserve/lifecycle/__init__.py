"""Which versions of which models are loaded: config, sources, version policy, the manager, leases.

Imports only downward: ``execution`` (runners, placement), ``platforms``, ``protos``.
"""
