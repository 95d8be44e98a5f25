"""Fixtures for the encryption tests: users with keys, a ledger per viewer."""

from __future__ import annotations

import attrs
import pytest

from cloudp2p.encryption.keys import UserKeys
from cloudp2p.encryption.ledger import Ledger


@attrs.frozen
class User:
    id: str
    keys: UserKeys

    @property
    def x25519(self):
        return self.keys.x25519_private

    @property
    def ed25519(self):
        return self.keys.ed25519_private

    @property
    def pub(self):
        return self.keys.public


@pytest.fixture
def alice() -> User:
    return User("alice", UserKeys.generate())


@pytest.fixture
def bob() -> User:
    return User("bob", UserKeys.generate())


@pytest.fixture
def carol() -> User:
    return User("carol", UserKeys.generate())


@pytest.fixture
def bob_ledger(tmp_path) -> Ledger:
    return Ledger(tmp_path / "bob-ledger.json")
