"""Which versions of which models are loaded: config, sources, version policy, leases, and the manager
in TF Serving's three parts (``versions`` + ``loading``, ``aspired``, ``reload``) behind ``manager``.

Imports only downward: ``execution`` (runners, placement), ``platforms``, ``protos``.
"""
