"""Deterministic randomness: a numpy Generator per (seed, purpose, ...) key, and a counter hash."""

from __future__ import annotations

import numpy as np

# Purposes: separate random streams so adding draws in one place never shifts another.
P_CITY = 1
P_SCHEDULE = 2
P_THEFT = 3
P_WINDOW = 4
P_GATEWAY = 5
P_PATROL = 6

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def rng(seed: int, *key: int) -> np.random.Generator:
    """A Generator for this seed and key path; no global state is touched."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, *key])))


def mix64(x: np.ndarray, salt: int) -> np.ndarray:
    """SplitMix64 finaliser over uint64 values: a counter-based hash for per-batch decisions.

    Used where a decision must not depend on how the work was split (a gateway batch can be
    assembled from reads generated in different windows, yet is retried as a whole).
    """
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + np.uint64(salt & 0xFFFFFFFFFFFFFFFF) * _GOLD + _GOLD
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def unit(x: np.ndarray, salt: int) -> np.ndarray:
    """Hash to a float64 uniform in [0, 1)."""
    return (mix64(x, salt) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
