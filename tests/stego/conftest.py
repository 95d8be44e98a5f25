"""Fixtures for the stego tests: the sample photographs in tests/data (see its README)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).resolve().parent.parent / "data"


def data_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def data_array(name: str, mode: str = "RGB") -> np.ndarray:
    with Image.open(DATA / name) as img:
        return np.array(img.convert(mode), dtype=np.uint8)


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return data_array("coffee.png")


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    return data_array("chelsea.png")
