"""Shared fixtures: small slices of the shipped data, loaded once per test session."""

from __future__ import annotations

import pytest

import course_utils as cu


@pytest.fixture(scope="session")
def test_split() -> cu.images.ImageSet:
    return cu.images.load_fashion_mnist("test")


@pytest.fixture(scope="session")
def small_train() -> cu.images.ImageSet:
    return cu.images.load_fashion_mnist("train", subset=1000, seed=0)
