"""Column contract of a sighting, shared by the sessionizer, the sightings topic and the store."""

from __future__ import annotations

import numpy as np

# A sighting: consecutive distinct reads of one tag at one reader with gaps <= GAP.
SIGHTING_DTYPES: dict[str, np.dtype] = {
    "tag_id": np.dtype(np.uint64),
    "reader_id": np.dtype(np.uint32),
    "first_ts": np.dtype(np.int64),  # UTC epoch ms
    "last_ts": np.dtype(np.int64),
    "n_reads": np.dtype(np.uint32),  # distinct (tag, reader, ts_ms) reads
    "max_rssi": np.dtype(np.int8),
    "lat": np.dtype(np.float64),
    "lon": np.dtype(np.float64),
    "h3_r7": np.dtype(np.uint64),
    "h3_r9": np.dtype(np.uint64),
    "h3_r12": np.dtype(np.uint64),
}

# Contract columns, in order; the store adds version/is_deleted for exact upserts.
SIGHTING_COLUMNS: tuple[str, ...] = tuple(SIGHTING_DTYPES)
H3_RESOLUTIONS: tuple[int, ...] = (7, 9, 12)
