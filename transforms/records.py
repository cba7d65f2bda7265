"""The audit row: the one data contract every stage reads and writes.

Rows travel between stages as plain dicts keyed by the names below. Keys that start
with an underscore (``_body``, ``_pixels``) are in-flight only: they carry image data
from one stage to the next inside a worker and are never written out.
"""
from __future__ import annotations

import datetime as _dt

import numpy as np
import pyarrow as pa

# Every audit row carries exactly one of these.
STATUSES = (
    "ok",
    "invalid_url",
    "blocked_address",
    "opted_out",
    "robots_unreachable",  # robots.txt answered 5xx / 429 or could not be reached: not fetched
    "http_error",
    "timeout",
    "connection_error",
    "too_large",
    "not_image",
    "decode_error",
    "internal_error",
    "reused",
    "not_fetched",
)

ACTIONS = ("keep", "review", "remove")

MATCH_TYPE = pa.struct(
    [
        ("list_id", pa.string()),
        ("entry_id", pa.string()),
        ("kind", pa.string()),
        ("distance", pa.float64()),
        ("reason", pa.string()),  # the list entry's reason, when it gives one
    ]
)

AUDIT_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("row_key", pa.string()),  # the dataset's own key (id_col) when it has one
        ("url", pa.string()),
        ("url_sha256", pa.string()),
        ("caption", pa.string()),
        ("status", pa.string()),
        ("http_status", pa.int32()),
        ("error", pa.string()),
        ("opt_out", pa.list_(pa.string())),  # each standard that said no (noai, robots.txt, ...)
        # Evidence of what was checked: the robots.txt verdict (allowed, disallowed,
        # no_file, unreachable; null: not read) and the opt-out header lines seen.
        ("robots_txt", pa.string()),
        ("opt_out_headers", pa.list_(pa.string())),
        ("content_md5", pa.string()),
        ("content_sha256", pa.string()),
        ("bytes", pa.int64()),
        ("mime", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("phash", pa.string()),
        ("pdq", pa.string()),
        ("pdq_quality", pa.int32()),
        ("scores", pa.map_(pa.string(), pa.float32())),
        ("labels", pa.list_(pa.string())),
        ("caption_flags", pa.list_(pa.string())),
        ("matches", pa.list_(MATCH_TYPE)),
        ("action", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("model", pa.string()),
        ("audited_at", pa.timestamp("us", tz="UTC")),
    ]
)

AUDIT_COLUMNS = tuple(AUDIT_SCHEMA.names)

# removals/: where the sensitive images are. For the operator only.
REMOVAL_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("row_key", pa.string()),
        ("url", pa.string()),
        ("url_sha256", pa.string()),
        ("list_id", pa.string()),
        ("entry_id", pa.string()),
        ("kind", pa.string()),
        ("distance", pa.float64()),
        ("reason", pa.string()),
    ]
)

# review/: rows a person should look at. Scores and reasons only: no image is stored.
REVIEW_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("row_key", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("scores", pa.map_(pa.string(), pa.float32())),
        ("caption_flags", pa.list_(pa.string())),
        ("reasons", pa.list_(pa.string())),
    ]
)

# embeddings/ (only when output.write_embeddings): row id and the unit vector as float16.
EMBEDDING_SCHEMA = pa.schema([("row_id", pa.string()), ("embedding", pa.list_(pa.float16()))])

# published/: safe to post so others clean their copies: no URL, caption, hash or reason.
PUBLISHED_SCHEMA = pa.schema([("url_sha256", pa.string()), ("row_key", pa.string())])


def conform_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` as `schema`: its columns in that order and type, a missing one all null.
    Audits written before a column was added still read (rematch, previous_audit)."""
    if table.schema.equals(schema):  # already conformed (a rematch conforms each table read)
        return table
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
               else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def new_record(row_id: str, url, caption, row_key: str | None = None) -> dict:
    """A fresh audit row with every contract column present (unknowns as None)."""
    record = dict.fromkeys(AUDIT_COLUMNS)
    record.update(
        row_id=row_id,
        row_key=row_key,
        url=url,
        caption=caption,
        opt_out=[],
        opt_out_headers=[],
        labels=[],
        caption_flags=[],
        matches=[],
        reasons=[],
    )
    return record


def audit_row(record: dict) -> dict:
    """The writable part of a record: contract columns only, in-flight keys dropped."""
    row = {name: record.get(name) for name in AUDIT_COLUMNS}
    if row["audited_at"] is None:
        row["audited_at"] = _dt.datetime.now(_dt.timezone.utc)
    if isinstance(row["scores"], dict):
        row["scores"] = list(row["scores"].items())
    return row


def removal_rows(record: dict) -> list[dict]:
    """The removals/ rows of a removed record: one per takedown match, or one per
    policy reason when a policy (not a list) removed it."""
    base = {k: record.get(k) for k in ("row_id", "row_key", "url", "url_sha256")}
    rows = [
        {**base, "list_id": m.get("list_id"), "entry_id": m.get("entry_id"), "kind": m.get("kind"),
         "distance": m.get("distance"), "reason": m.get("reason")}
        for m in record.get("matches") or ()
    ]
    if not rows:
        rows = [
            {**base, "list_id": None, "entry_id": None, "kind": None, "distance": None, "reason": reason}
            for reason in record.get("reasons") or ("removed",)
        ]
    return rows


def embedding_row(record: dict) -> dict:
    """A row of embeddings/: the row id and the vector as float16 (numpy, which Arrow
    converts to halffloat directly)."""
    return {"row_id": record["row_id"], "embedding": np.asarray(record["_embedding"], dtype=np.float16)}


def review_row(record: dict) -> dict:
    row = {name: record.get(name) for name in REVIEW_SCHEMA.names}
    if isinstance(row["scores"], dict):
        row["scores"] = list(row["scores"].items())
    return row


def published_row(record: dict) -> dict:
    """What may be posted publicly: the URL's hash and the dataset's own key for the row."""
    return {"url_sha256": record.get("url_sha256"), "row_key": record.get("row_key") or record["row_id"]}
