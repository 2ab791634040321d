"""The Open Inference Protocol (KServe V2): numpy <-> its JSON, binary and protobuf tensors."""
