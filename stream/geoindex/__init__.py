"""The geo-index: numba H3 kernels over numpy arrays, with h3-py's cell ids (the public API
below)."""

from stream.geoindex.cells import (
    ReaderCellTable,
    cell_to_parent,
    cell_to_string,
    cells_for,
    grid_disk,
    latlng_to_cell,
    latlng_to_cells_multi,
    string_to_cell,
)

__all__ = [
    "ReaderCellTable",
    "cell_to_parent",
    "cell_to_string",
    "cells_for",
    "grid_disk",
    "latlng_to_cell",
    "latlng_to_cells_multi",
    "string_to_cell",
]
