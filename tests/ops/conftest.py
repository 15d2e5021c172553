"""Fixtures of the operations tests: the worker's weights come from the security suite's."""

from tests.security.conftest import classifier_env  # noqa: F401 - a fixture, used by name
