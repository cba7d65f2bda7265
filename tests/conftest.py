"""Shared fixtures: a local Beam runner helper and small LAION-style datasets."""
from __future__ import annotations

import os
import sys
import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from tests import sandbox


_COLLECTED: dict[str, list] = {}


class _Collect(beam.DoFn):
    """Appends to a module-level list: the in-memory runner shares this process but
    pickles DoFns, so a closure over a local list would fill a copy."""

    def __init__(self, token: str):
        self._token = token

    def process(self, element):
        _COLLECTED[self._token].append(element)


def run_transform(transform: beam.PTransform, inputs=None) -> list:
    """Run `transform` on the local runner and return its output as a plain list."""
    token = uuid.uuid4().hex
    _COLLECTED[token] = []
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        source = pipeline | beam.Create(inputs) if inputs is not None else pipeline
        _ = source | transform | beam.ParDo(_Collect(token))
    return _COLLECTED.pop(token)


def laion_table(urls: list, captions: list | None = None) -> pa.Table:
    """A table with LAION's metadata columns around the given URLs."""
    n = len(urls)
    captions = captions if captions is not None else [f"caption {i}" for i in range(n)]
    return pa.table(
        {
            "SAMPLE_ID": pa.array(range(1000, 1000 + n), pa.int64()),
            "URL": pa.array(urls, pa.string()),
            "TEXT": pa.array(captions, pa.string()),
            "WIDTH": pa.array([640] * n, pa.int32()),
            "HEIGHT": pa.array([480] * n, pa.int32()),
            "similarity": pa.array([0.31] * n, pa.float64()),
            "punsafe": pa.array([0.01] * n, pa.float32()),
            "pwatermark": pa.array([0.05] * n, pa.float32()),
        }
    )


@pytest.fixture
def write_parquet(tmp_path):
    def _write(urls, name="part-00000.parquet", row_group_size=None, captions=None):
        path = tmp_path / name
        pq.write_table(laion_table(urls, captions), path, row_group_size=row_group_size)
        return str(path)

    return _write


_NETWORK_OFF = False


def _refuse_connections(event: str, args: tuple) -> None:
    # An audit hook sees every socket connect of this process, whatever library makes it.
    if event != "socket.connect":
        return
    address = args[1]
    if _NETWORK_OFF:
        raise OSError(f"network is off for this test: connect to {address!r}")
    # A second wall behind the sandbox (scripts/sandbox.sh), for runs without one: no
    # socket of the test process leaves this machine. Unix sockets pass.
    if isinstance(address, tuple) and not sandbox.is_loopback(address[0]):
        raise OSError(f"tests connect only to loopback: refused {address[0]!r}")


sys.addaudithook(_refuse_connections)


@pytest.fixture(scope="session", autouse=True)
def private_log_folder(tmp_path_factory):
    """laion-audit's logs (pipelines/cli.py log_path) go to this session's own folder,
    not the shared <tmp>/laion-audit; subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("laion-audit-logs")
    before = os.environ.get("LAION_AUDIT_LOG_DIR")
    os.environ["LAION_AUDIT_LOG_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("LAION_AUDIT_LOG_DIR", None)
        else:
            os.environ["LAION_AUDIT_LOG_DIR"] = before


@pytest.fixture
def network_off():
    """No socket of this process may connect while the test runs."""
    global _NETWORK_OFF
    _NETWORK_OFF = True
    try:
        yield
    finally:
        _NETWORK_OFF = False


def pytest_collection_modifyitems(config, items):
    """Tests marked `off_machine` aim at non-loopback addresses, expecting the guard to
    refuse them: without the sandbox a broken guard would send a real packet (from a
    Beam worker process, out of the audit hook's reach), so they skip instead."""
    if sandbox.ISOLATED:
        return
    skip = pytest.mark.skip(reason="needs the loopback-only network sandbox (run `make test`, "
                                   "or scripts/sandbox.sh): aims at a non-loopback address")
    for item in items:
        if "off_machine" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"network sandbox: {sandbox.describe()}")
