"""The hand-off between front-end processes and the engine (``--frontend_processes``).

Tensors live in shared-memory arenas (``arena``): anonymous ``memfd`` segments, mapped
by both ends, whose file descriptors cross the one Unix socket between a front end and
the engine (``wire``). Only small control messages are pickled; a tensor crosses as a
``TensorRef`` into a segment. Nothing is named in ``/dev/shm``: a segment lives exactly
as long as a process holds its descriptor or a mapping, so none outlives a SIGKILL.
"""
