"""The fuzz tests start real twistd daemons on 127.0.0.1: integration tests."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here) and "real" in item.name:
            item.add_marker(pytest.mark.integration)
