"""Routine kopf lines go to DEBUG; the ones about changes and failures stay."""

import logging

from pagoda.operator.logs import RoutineAtDebug


def record(msg, level=logging.INFO):
    return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)


def test_routine_lines_are_debug():
    f = RoutineAtDebug()
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.INFO)
    for msg in (
        "Timer 'observe_isvc' succeeded.",
        "Indexer 'engine_pods' succeeded.",
        "Handler 'child-deployments' succeeded.",
    ):
        r = record(msg)
        assert f.filter(r) is False and r.levelname == "DEBUG"
    for msg in (
        "Handler 'reconcile_isvc/create' succeeded.",
        "Creation is processed: 1 succeeded; 0 failed.",
        "Timer 'observe_isvc' failed with an exception. Will retry.",
    ):
        assert f.filter(record(msg)) is True
    assert f.filter(record("Timer 'observe_isvc' succeeded.", logging.WARNING)) is True
    root.setLevel(logging.DEBUG)
    try:
        assert f.filter(record("Timer 'observe_isvc' succeeded.")) is True
    finally:
        root.setLevel(saved)
