"""API fixtures: clients authenticated with a token as alice, bob or charlie."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for() -> Callable[..., APIClient]:
    def make(user) -> APIClient:  # noqa: ANN001
        token, _ = Token.objects.get_or_create(user=user)
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return c

    return make


@pytest.fixture
def as_alice(client_for, alice) -> APIClient:
    return client_for(alice)


@pytest.fixture
def as_bob(client_for, bob) -> APIClient:
    return client_for(bob)


@pytest.fixture
def as_charlie(client_for, charlie) -> APIClient:
    return client_for(charlie)
