"""Pure wire-format codecs: numpy <-> protocol payloads, with no I/O."""
