"""Sessionizing reads into exact sightings: the compact state, its numba kernels, the readable
reference."""
