"""The protocol-neutral core every front end calls.

A front end decodes its wire format into an ``InferenceRequest``, hands it to
``ServingCore`` and encodes the answer. Resolving the version or label, taking
and releasing the lease, validation, classify/regress planning and warm-up
all live here, once. Imports only downward: ``lifecycle``, ``execution``,
``platforms``, ``codecs``, ``protos``.
"""
