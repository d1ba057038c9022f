"""Keep the garbage collector's full collections short in long-running stream services.

A worker holds millions of long-lived objects (modules, compiled kernels, registries). CPython
traverses all of them in every full (generation 2) collection, which under load comes often and
pauses the whole process, alerts included, for the length of that traversal (figures in
docs/performance.md). `gc.freeze()` moves what is alive now into a permanent generation that
collections skip; objects created later are still collected as usual.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_long_lived(young_only: bool = False) -> None:
    """Exempt every object alive now from future collections (call once warmed up, and again
    after a phase that creates many long-lived objects, e.g. the first batch compiling kernels).

    `young_only`: collect only the young generations first (a few ms), not the old one, whose
    full pass over a loaded worker's heap stalls it; old garbage, if any, stays frozen."""
    gc.collect(1 if young_only else 2)  # what is garbage now should not be frozen
    gc.freeze()
    log.debug("gc: %d objects frozen", gc.get_freeze_count())
