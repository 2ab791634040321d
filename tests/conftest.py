"""Process-wide set-up for the suite: the test modules import TensorFlow and torch side by side."""

import pytest

from modelserve.platforms import before_tensorflow

before_tensorflow()  # triton (CUDA builds of torch) must load before TensorFlow: see its docstring


@pytest.fixture(scope="module", params=[1, 2], ids=["1-process", "2-frontend-processes"])
def frontend_processes(request: pytest.FixtureRequest) -> int:
    """--frontend_processes for a module's shared server: its tests run once with the single process and
    once with two front-end processes around the engine (docs/architecture.md)."""
    return int(request.param)
