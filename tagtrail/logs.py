"""Log configuration of every tagtrail process: our packages at TAGTRAIL_LOG_LEVEL, libraries at
WARNING (aiokafka's and Faust's debug output would drown ours, and costs CPU at load)."""

from __future__ import annotations

import logging

from core.config import Settings

OWN_PACKAGES = ("tagtrail", "ingest", "stream", "store", "recovery", "benchmarks")


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for name in OWN_PACKAGES:
        logging.getLogger(name).setLevel(settings.log_level)
