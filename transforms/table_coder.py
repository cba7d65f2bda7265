"""Beam's coder for Arrow tables (registered for `pa.Table` on import).

A table that crosses a stage goes as Arrow IPC. What matters more: Beam samples the
byte size of elements on every PCollection, and with the default (pickle) coder each
sampled table, thousands of rows, is serialised just to be measured; here its size is
its buffers' (`nbytes`), serialising nothing. Transforms declare their tables with
`with_output_types(pa.Table)` for the coder to apply.
"""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import coder_impl


def _encode(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _decode(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _size(table: pa.Table) -> int:
    return table.nbytes


class ArrowTableCoder(beam.coders.Coder):
    """pa.Table <-> Arrow IPC stream bytes; size estimates without serialising."""

    def encode(self, value: pa.Table) -> bytes:
        return _encode(value)

    def decode(self, encoded: bytes) -> pa.Table:
        return _decode(encoded)

    def is_deterministic(self) -> bool:
        return False

    def _create_impl(self):
        return coder_impl.CallbackCoderImpl(_encode, _decode, _size)

    def to_type_hint(self):
        return pa.Table

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)
