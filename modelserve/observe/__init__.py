"""Seeing inside the server: one record per request (``trace``), and what reads it.

A foundation layer, like ``budget``: every layer above may import it, it imports
only ``errors``. Front ends open a ``RequestTrace`` as a request arrives and
hand it on with the request; the core names the model, version and signature
in it, the runner stamps when the model ran; the front end closes it with the
outcome, and ``Observers`` pass the finished record to metrics, the access log
and tracing: each reads the same record, none is on the request's path unless
switched on.
"""

from .trace import UNTRACED, Observer, Observers, RequestTrace

__all__ = ["UNTRACED", "Observer", "Observers", "RequestTrace"]
