"""modelserve: a TensorFlow Serving compatible model server for ONNX, TensorFlow and PyTorch."""

__version__ = "0.1.0"
