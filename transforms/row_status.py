"""A row's `status` and `error` columns, as every stage fills them: the short error
text a row keeps, and Beam counters per status (they sum to the rows a stage saw)."""
from __future__ import annotations

from apache_beam.metrics import Metrics

MAX_ERROR_CHARS = 200


def short_error(err: BaseException | str, limit: int = MAX_ERROR_CHARS) -> str:
    """`Type: message` (or the text given), cut to `limit` characters with an ellipsis."""
    if isinstance(err, BaseException):
        message = str(err)
        text = f"{type(err).__name__}: {message}" if message else type(err).__name__
    else:
        text = err
    return text if len(text) <= limit else text[: limit - 3] + "..."


class StatusCounters:
    """`<namespace>/status_<status>` counters, each made on first use."""

    def __init__(self, namespace: str):
        self._namespace = namespace
        self._counters: dict = {}

    def inc(self, status: object, n: int = 1) -> None:
        key = str(status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = Metrics.counter(self._namespace, f"status_{key}")
        counter.inc(n)
