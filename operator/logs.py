"""Quiet INFO logs: kopf says "... succeeded." at INFO for every timer tick, every index update and
every child event; with 200 InferenceServices that is 20+ lines a second saying nothing. Those lines
go to DEBUG (`pagoda operator -v` shows them); changes, failures and retries stay at INFO."""

from __future__ import annotations

import logging
import re

ROUTINE = re.compile(r"^(Timer|Indexer) '[^']*' succeeded\.$|^Handler 'child-[a-z]+' succeeded\.$")


class RoutineAtDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and ROUTINE.match(record.getMessage()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def quiet_routine() -> None:
    """Install once per process (kopf's per-object logger)."""
    logger = logging.getLogger("kopf.objects")
    if not any(isinstance(f, RoutineAtDebug) for f in logger.filters):
        logger.addFilter(RoutineAtDebug())
