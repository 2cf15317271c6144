"""The serving tests' fixtures (defined in tests/support/serving.py, which says why there).

``server`` (a ModelServer) is in tests/conftest.py's SLOW_FIXTURES: a test using it is
marked slow. test_rest_hostile.py defines a ``server`` of its own, which wins there.
"""
from tests.support.serving import direct, images, models, server  # noqa: F401 - fixtures
