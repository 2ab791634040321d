"""Process-wide set-up for the suite: the test modules import TensorFlow and torch side by side."""

from modelserve.platforms import before_tensorflow

before_tensorflow()  # triton (CUDA builds of torch) must load before TensorFlow: see its docstring
