"""Reuse stage: rows whose URL an earlier audit fetched are not fetched again.

    records (after Read / Reshuffle)
      ├─ no url_sha256 (invalid_url) ─────────────────────────────────► pending
      └─ keyed by url_sha256 ─┐
    previous audit/*.parquet  │  (ReadFromParquetBatched, carried columns only)
      └─ one row per url_sha256 (PickOne, combined before the shuffle)
                              ▼
                        CoGroupByKey ──► reused (status reused, data carried)
                                    └──► pending (never seen, stale, or a status to refetch)

`pending` goes on to Fetch; `reused` skips Fetch, Decode + hash and Embed / Classify
(its scores and labels are carried: it has no image to embed) and rejoins before
FlagCaptions, so caption flags, takedown matches and the decision are today's.

A reused row keeps its original `audited_at` (age is measured from the fetch that really
happened) and, when that fetch was not ok, its original status at the head of `error`
("timeout: ReadTimeout"), so a later rerun reading this audit can still refetch it by
`fetch.refetch_statuses`. The join is keyed and shuffled: no driver-side dict, no side
input, sized for billions of rows; every input row leaves exactly once, in one of the two
outputs.
"""
from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import paths
from transforms.fetch_settings import FetchSettings, parse_duration
from transforms.records import AUDIT_SCHEMA, STATUSES, conform_table

# Read from the previous audit (projection): the key, what a reused row carries, and
# status + error for its original status. Order is the candidate tuple's order.
PREVIOUS_COLUMNS = (
    "url_sha256", "status", "error", "audited_at", "http_status", "opt_out",
    "content_md5", "content_sha256", "bytes", "mime", "width", "height",
    "phash", "pdq", "pdq_quality", "scores", "labels", "model", "robots_txt", "opt_out_headers",
)
_INDEX = {name: i for i, name in enumerate(PREVIOUS_COLUMNS)}
# Carried onto the reused row as they are (status and error are worked out).
CARRIED = ("audited_at", "http_status", "opt_out", "content_md5", "content_sha256", "bytes",
           "mime", "width", "height", "phash", "pdq", "pdq_quality", "robots_txt", "opt_out_headers")
SCORE_COLUMNS = ("scores", "labels", "model")
# An original status with nothing to carry: such a row is always fetched again.
NEVER_REUSED = frozenset({"not_fetched", "invalid_url"})
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)

PENDING, REUSED = "pending", "reused"


# ------------------------------------------------------------------ plain functions


def previous_patterns(previous: Iterable[str]) -> list[str]:
    """An earlier audit's output path -> its `audit/*.parquet`; a path that already names
    parquet files (or a glob of them) stays as it is."""
    out = []
    for path in previous:
        path = path.rstrip("/")
        out.append(path if path.endswith(".parquet") else paths.join(paths.join(path, "audit"), "*.parquet"))
    return out


def original_status(status: str | None, error: str | None) -> str:
    """The status the row's fetch really had: a reused row's is at the head of its error
    ("timeout: ...") when it was not ok, else ok."""
    if status != "reused":
        return status or "internal_error"
    if error is None:
        return "ok"
    head = error.split(":", 1)[0].strip()
    return head if head in STATUSES and head != "reused" else "internal_error"


def reused_error(status: str, error: str | None) -> str | None:
    """A reused row's error: None for an ok fetch, else the original status first."""
    if status == "ok":
        return None
    return f"{status}: {error}" if error else status


def candidates_of_table(table: pa.Table) -> Iterator[tuple[str, tuple]]:
    """(url_sha256, candidate tuple in PREVIOUS_COLUMNS order) for each row of a previous
    audit's table that has a url_sha256; the status is already the original one."""
    names = table.column_names
    columns = [_column(table, c).to_pylist() if c in names else [None] * table.num_rows
               for c in PREVIOUS_COLUMNS]
    status_i, error_i = _INDEX["status"], _INDEX["error"]
    for values in zip(*columns):
        key = values[0]
        if not key:
            continue
        values = list(values)
        status = original_status(values[status_i], values[error_i])
        if values[status_i] == "reused" and status != "ok":
            # "timeout: ReadTimeout" -> the original error text again
            values[error_i] = (values[error_i] or "").partition(":")[2].strip() or None
        values[status_i] = status
        yield key, tuple(values)


def _column(table: pa.Table, name: str):
    column = table.column(name)
    if name == "audited_at":  # microseconds since the epoch: a plain int crosses shuffles cheaply
        column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return column


def rank(candidate: tuple) -> tuple:
    """Larger is preferred: an ok row over any other, then the newest `audited_at`, then a
    total order on the values, so the pick never depends on the order rows arrive in."""
    return _rank(candidate) + (repr(candidate),)


def _rank(candidate: tuple) -> tuple:
    audited = candidate[_INDEX["audited_at"]]
    return candidate[_INDEX["status"]] == "ok", -1 if audited is None else audited


def _better(a: tuple, b: tuple) -> tuple:
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return a if ra > rb else b
    return a if repr(a) >= repr(b) else b  # a tie: the values decide (rarely reached)


def pick_one(candidates: Iterable[tuple]) -> tuple:
    """The previous row a URL's rows are decided by: the newest ok one, else the newest
    (ties broken by the values). Associative, so Beam combines it before the shuffle."""
    return functools.reduce(_better, candidates)


def micros(when: _dt.datetime) -> int:
    """A UTC instant as the candidates hold `audited_at`: microseconds since the epoch."""
    return (when - _EPOCH) // _dt.timedelta(microseconds=1)


def needs_fetch(candidate: tuple | None, refetch_statuses: frozenset[str],
                cutoff: int | None) -> str | None:
    """Why a URL is fetched again ("new", "status", "age"), None when its previous row is
    reused. `cutoff` (`micros`): rows audited before it are too old (None: no limit)."""
    if candidate is None:
        return "new"
    status = candidate[_INDEX["status"]]
    if status in NEVER_REUSED or status in refetch_statuses:
        return "status"
    if cutoff is not None:
        audited = candidate[_INDEX["audited_at"]]
        if audited is None or audited < cutoff:
            return "age"
    return None


def reuse_record(record: dict, candidate: tuple, carry_scores: bool) -> dict:
    """A copy of today's `record` with the previous row's fetch results: status reused,
    its original audited_at, hashes, size, type and opt-out, and (with `carry_scores`)
    its scores, labels and model. Caption flags, matches and the decision stay today's."""
    out = dict(record)
    for name in CARRIED:
        out[name] = candidate[_INDEX[name]]
    if out["audited_at"] is not None:
        out["audited_at"] = _EPOCH + _dt.timedelta(microseconds=out["audited_at"])
    out["opt_out"] = list(out["opt_out"] or [])
    out["opt_out_headers"] = list(out["opt_out_headers"] or [])
    out["status"] = "reused"
    out["error"] = reused_error(candidate[_INDEX["status"]], candidate[_INDEX["error"]])
    if carry_scores:
        scores = candidate[_INDEX["scores"]]
        out["scores"] = dict(scores) if scores is not None else None
        out["labels"] = list(candidate[_INDEX["labels"]] or [])
        out["model"] = candidate[_INDEX["model"]]
    return out


def reuse_counts(status_counts: dict) -> dict:
    """rows_reused / rows_fetched of a summary's status counts: fetched is every row that
    went to the fetcher (all but reused, invalid_url and not_fetched)."""
    skipped = sum(status_counts.get(s, 0) for s in ("reused", "invalid_url", "not_fetched"))
    return {"rows_reused": status_counts.get("reused", 0),
            "rows_fetched": sum(status_counts.values()) - skipped}


# ------------------------------------------------------------------ a local run's group


def url_keys(units: Iterable, spec) -> pa.Array:
    """The distinct url_sha256 of the rows of read units (transforms.read.ReadUnit): the
    keys a local run's group can join on. Read column-wise, the URL column only."""
    from transforms.read import DatasetSpec, read_unit_columns
    from transforms.urls import url_sha256_of

    spec = DatasetSpec(spec.url_col, spec.caption_col, read_batch_rows=spec.read_batch_rows)
    keys: set[str] = set()
    for unit in units:
        for _, block in read_unit_columns(unit, spec):
            keys.update(url_sha256_of(u) for u in block[spec.url_col] if isinstance(u, str) and u.strip())
    return pa.array(sorted(keys), pa.string())


# The columns a group's share of a previous audit is written with, whatever the audit.
PREVIOUS_SCHEMA = pa.schema([AUDIT_SCHEMA.field(name) for name in PREVIOUS_COLUMNS])


def previous_files(previous: Iterable[str]) -> list[str]:
    """The parquet files of earlier audits' output paths (as `previous_patterns`)."""
    found: dict[str, None] = {}
    for pattern in previous_patterns(previous):
        for match in FileSystems.match([pattern])[0].metadata_list:
            found[match.path] = None
    return sorted(found)


def previous_rows_of(files: Iterable[str], keys: pa.Array) -> Iterator[pa.Table]:
    """The rows of previous audit files whose url_sha256 is among `keys` (PREVIOUS_SCHEMA).

    Row group by row group: the url_sha256 column is read and tested (`is_in`, one hash
    lookup per row); the other carried columns are read only for row groups with a hit.
    Memory is one row group's key column plus the hits."""
    if not len(keys):
        return
    lookup = pc.SetLookupOptions(keys)
    for path in files:
        with FileSystems.open(path) as handle:
            parquet = pq.ParquetFile(handle)
            names = set(parquet.schema_arrow.names)
            if "url_sha256" not in names:
                continue
            wanted = [c for c in PREVIOUS_COLUMNS if c in names]
            for index in range(parquet.metadata.num_row_groups):
                found = pc.is_in(parquet.read_row_group(index, columns=["url_sha256"]).column(0),
                                 options=lookup)
                hits = pc.sum(found).as_py() or 0
                if not hits:
                    continue
                table = parquet.read_row_group(index, columns=wanted).filter(found)
                yield conform_table(table, PREVIOUS_SCHEMA)


def write_previous_rows(previous: Iterable[str], keys: pa.Array, path: str) -> int:
    """Write to `path` (one parquet file, PREVIOUS_SCHEMA) the rows of the previous
    audits `previous` whose url_sha256 is among `keys`; return how many. A file with no
    rows is still written: the group's join reads it."""
    files = previous_files(previous)
    rows = 0
    with FileSystems.create(path) as handle:
        with pq.ParquetWriter(handle, PREVIOUS_SCHEMA) as writer:
            for table in previous_rows_of(files, keys):
                writer.write_table(table)
                rows += table.num_rows
    return rows


# ------------------------------------------------------------------ Beam


def _key_or_pass(record: dict):
    key = record.get("url_sha256")
    if record.get("status") is None and key:
        yield key, record
    else:  # invalid_url (or a status set upstream): never joined
        yield beam.pvalue.TaggedOutput(PENDING, record)


class _Decide(beam.DoFn):
    def __init__(self, refetch_statuses: tuple[str, ...], cutoff: _dt.datetime | None, carry_scores: bool):
        self._statuses = frozenset(refetch_statuses)
        self._cutoff = cutoff
        self._carry = carry_scores

    def setup(self):
        self._counters = {why: Metrics.counter("reuse", f"rows_fetch_{why}") for why in ("new", "status", "age")}
        self._reused = Metrics.counter("reuse", "rows_reused")

    def process(self, element):
        _, grouped = element
        previous = list(grouped["previous"])
        candidate = pick_one(previous) if previous else None
        why = needs_fetch(candidate, self._statuses, self._cutoff)
        for record in grouped["rows"]:
            if why is None:
                self._reused.inc()
                yield beam.pvalue.TaggedOutput(REUSED, reuse_record(record, candidate, self._carry))
            else:
                self._counters[why].inc()
                yield record


class ReuseAudited(beam.PTransform):
    """records -> (pending, reused): see the module's docstring.

    `previous`: earlier audits' output paths (or parquet files / globs); `settings`: the
    fetch section (refetch_older_than, refetch_statuses); `now`: the instant ages are
    measured from (default: when the pipeline is built, the same on every worker);
    `carry_scores`: reused rows keep the previous scores, labels and model (embedding on,
    not precomputed); `output_path`: the run's own, which a previous audit may not be.
    """

    def __init__(self, previous: Iterable[str], settings: FetchSettings | None = None, *,
                 now: _dt.datetime | None = None, carry_scores: bool = False,
                 output_path: str | None = None, label: str | None = None):
        super().__init__(label)
        settings = settings or FetchSettings()
        previous = list(previous)
        self._patterns = previous_patterns(previous)
        if not self._patterns:
            raise ValueError("dataset.previous_audit: no previous audit given")
        for pattern in self._patterns:
            if output_path is not None and _inside(pattern, output_path):
                raise ValueError("dataset.previous_audit: is output.path, which a run clears before it reads")
            if not paths.is_remote(pattern) and not FileSystems.match([pattern])[0].metadata_list:
                raise ValueError(f"dataset.previous_audit: no audit parquet matches '{pattern}'")
        now = now or _dt.datetime.now(_dt.timezone.utc)
        older = settings.refetch_older_than
        self._cutoff = micros(now - _dt.timedelta(seconds=parse_duration(older))) if older else None
        self._statuses = tuple(settings.refetch_statuses)
        self._carry = carry_scores

    @classmethod
    def from_config(cls, config, previous: list[str] | None = None, **kwargs) -> ReuseAudited:
        """From an audit config: dataset.previous_audit, the fetch section, the output path;
        scores carried when the run embeds images itself. `previous`: read these files
        instead (a local run's group: its share of the previous audit, which
        `write_previous_rows` put under the run's own output path)."""
        embedding = config.embedding
        return cls(previous or config.dataset.previous_audit, config.fetch,
                   output_path=None if previous else config.output.path,
                   carry_scores=embedding.enabled and not embedding.precomputed, **kwargs)

    def expand(self, records):
        split = records | "KeyByUrl" >> beam.FlatMap(_key_or_pass).with_outputs(PENDING, main="keyed")
        reads = [
            records.pipeline
            | f"ReadPrevious{i}" >> beam.io.ReadFromParquetBatched(pattern, columns=list(PREVIOUS_COLUMNS))
            for i, pattern in enumerate(self._patterns)
        ]
        tables = reads[0] if len(reads) == 1 else tuple(reads) | "AllPrevious" >> beam.Flatten()
        previous = (
            tables
            | "PreviousRows" >> beam.FlatMap(candidates_of_table)
            | "PickOne" >> beam.CombinePerKey(pick_one)
        )
        decided = (
            {"rows": split.keyed, "previous": previous}
            | "JoinPrevious" >> beam.CoGroupByKey()
            | "Decide" >> beam.ParDo(_Decide(self._statuses, self._cutoff, self._carry)).with_outputs(
                REUSED, main=PENDING)
        )
        pending = (decided[PENDING], split[PENDING]) | "Pending" >> beam.Flatten()
        return pending, decided[REUSED]


def _inside(pattern: str, folder: str) -> bool:
    """Whether `pattern` names files under `folder` (which a run clears at launch)."""
    if not (paths.is_remote(pattern) or paths.is_remote(folder)):
        pattern, folder = paths.absolute(pattern), paths.absolute(folder)
    return pattern.startswith(folder.rstrip("/") + "/")
