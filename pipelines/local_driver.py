"""Local audits, driven group by group: bounded memory and resume.

Beam's local runners (FnApiRunner, DirectRunner, PortableRunner on an embedded job
server) hold in memory everything that crosses a Reshuffle or GroupByKey: about 2 KB per
row, so one pipeline over a whole dataset grows with the dataset. A local audit is
therefore run as one small pipeline per *group*: consecutive read units (parquet
row-group ranges, a text file whole) of about `runner.local_group_rows` rows (an audit
on tables of rows, holding far less per row, defaults to TABLE_GROUP_ROWS). Distributed
runners (Dataflow, Flink, ...) keep running one pipeline (pipelines/audit.py).

Each group writes its own part of the outputs, under its own names:

    audit/g00003-part-*.parquet, review/g00003-part-*, removals/..., published/...,
    embeddings/...            shards named after the group
    clean/<file>              a file whose rows all lie in the group is cleaned there;
                              a file split over groups is cleaned after the last group
    report/groups/g00003.json the group's counts (summary_counts), its read units, its
                              input files' size and modification time, and Beam's row
                              counts: written once its pipeline finished, it records
                              the group as done
    report/groups/g00003.previous.parquet
                              with dataset.previous_audit: the previous audit's rows of
                              the group's URLs, which its join reads (share_previous);
                              removed when the group is done

and report/summary.json is the sum of the group files, checked as one run's
(`account`: rows in == rows audited by the outputs and by Beam's metrics, summed).

Resume: a run started again with the same config (`config_sha256` of the existing
report/manifest.json) and output path keeps every group whose file exists, names the same
read units, accounted for its rows and finds its input files of the size and modification
time it recorded (a file edited in place is audited again), removes every other part (a
killed group's partial shards, Beam's temp folders, shares of a previous audit) and runs
the rest. A different config, or `fresh`, clears the outputs and starts over.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.config import AuditConfig, ConfigError
from pipelines.manifest import ManifestError, read_manifest, write_manifest
from pipelines.runners import LOCAL_RUNNERS, make_pipeline
from transforms import paths as paths_mod
from transforms.clean_beam import WriteCleanDataset
from transforms.outputs import removed_row_ids
from transforms.read import ReadUnit, format_of, plan_units, source_names
from transforms.write import (
    clear_outputs,
    clear_parts,
    output_dir,
    read_json,
    sum_summaries,
    summary_path,
    write_json,
)

log = logging.getLogger(__name__)

def is_local_runner(runner) -> bool:
    """Whether `runner` (a RunnerConfig) runs in this process's machine: the in-memory and
    multi-process runners, and the portable runner on an embedded job server."""
    if runner.name in LOCAL_RUNNERS:
        return True
    return runner.name == "PortableRunner" and (runner.options or {}).get("job_endpoint") == "embed"


# Rows per group of an audit on tables (pipelines.audit.records_only_reason is None)
# unless runner.local_group_rows is set: such a pipeline holds a table or two at a time
# whatever its group's size (nothing of a row crosses a shuffle), so the limit is what a
# killed run redoes and each group's start (about half a second of Beam per pipeline).
TABLE_GROUP_ROWS = 1_000_000


def group_rows(config: AuditConfig) -> int:
    """Rows per group: runner.local_group_rows as set, else its default for records
    and TABLE_GROUP_ROWS for an audit on tables."""
    from pipelines.audit import records_only_reason

    runner = config.runner
    if "local_group_rows" in runner.model_fields_set or records_only_reason(config) is not None:
        return runner.local_group_rows
    return TABLE_GROUP_ROWS


def drives(config: AuditConfig) -> bool:
    """Whether `run_audit` drives this audit group by group."""
    return is_local_runner(config.runner) and config.runner.local_group_rows > 0


def groups_dir(output_path: str) -> str:
    return output_dir(output_dir(output_path, "report"), "groups")


@dataclasses.dataclass(frozen=True)
class Group:
    """One pipeline's share of a local audit: consecutive read units of the dataset."""

    index: int
    units: tuple[ReadUnit, ...]
    output_path: str
    sources: dict[str, str]  # the whole run's row-id names of files (as ReadDataset names them)
    clean_files: tuple[str, ...]  # the files whose rows all lie in this group: cleaned by it
    # With dataset.previous_audit: the file holding this group's share of the previous
    # audit (`previous_file`, written just before the group runs), which its join reads.
    previous: str | None = None

    @property
    def name(self) -> str:
        return f"g{self.index:05d}"

    @property
    def prefix(self) -> str:  # every part this group writes starts with it
        return f"{self.name}-"

    @property
    def done_file(self) -> str:
        return output_dir(groups_dir(self.output_path), f"{self.name}.json")

    @property
    def counts_file(self) -> str:  # the group pipeline's own summary, before Beam's counts are added
        return output_dir(groups_dir(self.output_path), f"{self.name}.counts.json")

    @property
    def previous_file(self) -> str:
        return output_dir(groups_dir(self.output_path), f"{self.name}.previous.parquet")

    def files(self) -> list[str]:
        """The input files this group reads rows of."""
        return list(dict.fromkeys(u.path for u in self.units))

    def unit_keys(self) -> list[dict]:
        """The read units as recorded in the group's file, to tell a plan's group apart."""
        return [{"path": u.path, "start": u.start, "count": u.count, "row_groups": list(u.row_groups)}
                for u in self.units]


def plan_groups(paths: list[str], spec, output_path: str, group_rows: int) -> list[Group]:
    """The dataset's read units (parquet split at row groups into units of at most about
    `group_rows` rows; a text file is one unit, its rows unknown until read, and gets a
    group to itself), packed in file order into groups of at most `group_rows` rows
    (a unit larger than that is a group alone)."""
    sources = source_names(paths)
    batch = max(1, min(spec.read_batch_rows, group_rows))
    units: list[ReadUnit] = []
    for path in paths:
        units += plan_units(path, sources[path], format_of(path, spec.format), batch)
    packed: list[list[ReadUnit]] = []
    rows = 0
    for unit in units:
        size = unit.count if unit.count >= 0 else group_rows
        if packed and packed[-1] and rows + size <= group_rows:
            packed[-1].append(unit)
            rows += size
        else:
            packed.append([unit])
            rows = size
    groups_of: dict[str, set[int]] = {}
    for index, members in enumerate(packed):
        for unit in members:
            groups_of.setdefault(unit.path, set()).add(index)
    groups = []
    for index, members in enumerate(packed):
        whole = tuple(dict.fromkeys(u.path for u in members if groups_of[u.path] == {index}))
        groups.append(Group(index, tuple(members), output_path, sources, whole))
    return groups


def split_files(groups: list[Group]) -> list[str]:
    """The files no single group cleans (their rows lie in several groups)."""
    whole = {path for g in groups for path in g.clean_files}
    return list(dict.fromkeys(u.path for g in groups for u in g.units if u.path not in whole))


# ------------------------------------------------------------------ what a group left


def _exists(path: str) -> bool:
    return FileSystems.exists(path)


def _write_json_atomic(path: str, payload: dict) -> None:
    """Write where a reader sees the whole file or none (a kill mid-write leaves no file)."""
    if paths_mod.is_remote(path):  # object stores publish an object whole, on close
        write_json(path, payload)
        return
    tmp = f"{path}.tmp"
    write_json(tmp, payload)
    os.replace(tmp, path)


def file_identities(paths: list[str]) -> dict[str, dict]:
    """What tells an input file's content changed, by path: its size and modification
    time (locally os.stat's; remotely what the filesystem's listing offers, e.g. an
    object's update time), from one FileSystems.match. A file edited in place gets a new
    identity even when its row layout stays the same."""
    identities = {}
    for path, found in zip(paths, FileSystems.match(list(paths))):
        meta = found.metadata_list[0] if found.metadata_list else None
        identities[path] = {"size": None if meta is None else meta.size_in_bytes,
                            "mtime": None if meta is None else meta.last_updated_in_seconds}
    return identities


def finished_group(group: Group, identities: dict[str, dict] | None = None) -> dict | None:
    """The group's recorded summary when it is done: its file exists, names the same read
    units, its rows were all accounted for and (given `identities`, file_identities of
    the inputs now) its input files are as they were when it ran; else None (the group
    is run again)."""
    if not _exists(group.done_file):
        return None
    try:
        recorded = read_json(group.done_file)
    except (OSError, ValueError):
        return None
    if recorded.get("units") != group.unit_keys() or not recorded.get("all_rows_accounted"):
        return None
    if identities is not None and recorded.get("inputs") != _inputs_of(group, identities):
        return None
    return recorded


def _inputs_of(group: Group, identities: dict[str, dict]) -> dict[str, dict]:
    return {path: identities.get(path) for path in group.files()}


def previous_config(output_path: str) -> str | None:
    """config_sha256 of the run whose outputs are under `output_path`; None if none is."""
    try:
        return read_manifest(output_path).config_sha256
    except (ManifestError, OSError):
        return None


def _clear_group_files(output_path: str, keep: set[str]) -> None:
    """Remove the group files (and their temp and counts files) of groups not in `keep`."""
    stale = [path for name, path in paths_mod.list_folder(groups_dir(output_path)) if name not in keep]
    if stale:
        FileSystems.delete(stale)


# ------------------------------------------------------------------ running


def _counter(result, name: str) -> int:
    from pipelines.audit import counter

    return counter(result, "audit", name)


def _build_group(config: AuditConfig, plan, group: Group) -> beam.Pipeline:
    from pipelines import audit

    pipeline = make_pipeline(config.runner)
    try:
        audit.build_audit(pipeline, config, plan, group=group)
    except ValueError as err:
        # Building reads what the config names: a problem there is the config's.
        raise ConfigError(str(err).splitlines()[0]) from None
    return pipeline


def share_previous(config: AuditConfig, plan, group: Group) -> Group:
    """With dataset.previous_audit: write the group's share of the previous audit (the
    rows whose url_sha256 is among the group's) to its `previous_file`, and return the
    group reading it; without, the group as it is.

    This bounds a group's memory by the group: its join holds its own rows and their
    previous rows only, not the whole previous audit once per group. The previous
    audit's url_sha256 column is scanned once per group (a vectorised set lookup); its
    other columns are read only where a row group holds a hit."""
    if not config.dataset.previous_audit:
        return group
    from transforms.reuse import url_keys, write_previous_rows

    started = time.monotonic()
    keys = url_keys(group.units, plan.spec)
    rows = write_previous_rows(config.dataset.previous_audit, keys, group.previous_file)
    log.info("audit group %s: %d previous row(s) for %d url(s) in %.1fs", group.name, rows, len(keys),
             time.monotonic() - started)
    return dataclasses.replace(group, previous=group.previous_file)


def run_group(config: AuditConfig, plan, group: Group, pipeline: beam.Pipeline | None = None,
              inputs: dict[str, dict] | None = None) -> dict:
    """Run one group's pipeline and record it done: its counts, read units, input file
    identities (`inputs`: file_identities) and Beam's row counts in
    report/groups/<group>.json (written last)."""
    started = time.monotonic()
    if config.dataset.previous_audit:
        group, pipeline = share_previous(config, plan, group), None  # built again, reading its share
    pipeline = pipeline or _build_group(config, plan, group)
    result = pipeline.run()
    result.wait_until_finish()
    counts = read_json(group.counts_file)
    metrics = {"rows_in": _counter(result, "rows_in"), "rows_audited": _counter(result, "rows_audited")}
    recorded = dict(counts)
    recorded.update(
        group=group.name,
        units=group.unit_keys(),
        inputs=_inputs_of(group, inputs or {}),
        metrics=metrics,
        wall_s=round(time.monotonic() - started, 3),
        all_rows_accounted=len({counts["rows_in"], counts["rows_audited"], *metrics.values()}) == 1,
    )
    _write_json_atomic(group.done_file, recorded)
    FileSystems.delete([group.counts_file] + ([group.previous] if group.previous else []))
    return recorded


def run_clean(config: AuditConfig, plan, files: list[str], sources: dict[str, str]) -> None:
    """clean/ for files split over several groups: their removed rows read back from
    audit/ (two columns), then each file copied without them."""
    if not files:
        return
    out = config.output.path
    pipeline = make_pipeline(config.runner)
    removed = (
        pipeline
        | "ReadAudit" >> beam.io.ReadFromParquetBatched(output_dir(out, "audit/*.parquet"),
                                                        columns=["row_id", "action"])
        | "RemovedIds" >> beam.FlatMap(removed_row_ids)
    )
    _ = removed | "WriteClean" >> WriteCleanDataset(files, sources, plan.spec, output_dir(out, "clean"))
    pipeline.run().wait_until_finish()


def run_local_audit(config: AuditConfig, plan, fresh: bool = False, progress=None) -> tuple[dict, float]:
    """Drive an audit group by group (see the module's docstring); return the whole
    run's summary (written to report/summary.json) and this run's wall seconds.
    `progress` (pipelines.progress.Progress) is told the total and each group's end."""
    from pipelines.audit import account, audit_manifest
    from pipelines.progress import NO_PROGRESS, total_rows

    progress = progress or NO_PROGRESS

    started = time.monotonic()
    out = config.output.path
    groups = plan_groups(plan.paths, plan.spec, out, group_rows(config))
    # Everything the config names is read before any output is touched: a config error
    # leaves a previous run's outputs as they were.
    first = _build_group(config, plan, groups[0])
    try:
        manifest = audit_manifest(config, plan)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None

    previous = previous_config(out)
    # Taken before any group runs: a file edited while the run goes is seen as changed.
    identities = file_identities(plan.paths)
    done: dict[str, dict] = {}
    if fresh or previous != manifest.config_sha256:
        if previous is not None and not fresh:
            log.warning("%s holds a run of another config: its outputs are replaced", out)
        clear_outputs(out)
    else:
        for group in groups:
            recorded = finished_group(group, identities)
            if recorded is not None:
                done[group.name] = recorded
        # A killed group's partial parts, Beam's temp folders, the old totals: gone.
        clear_parts(out, tuple(f"{name}-" for name in done))
        _clear_group_files(out, {f"{name}.json" for name in done})
        if _exists(summary_path(out)):
            FileSystems.delete([summary_path(out)])
    write_manifest(out, manifest)
    progress.start(total_rows(groups), sum(s["rows_audited"] for s in done.values()),
                   sum((s.get("status") or {}).get("ok", 0) for s in done.values()))

    summaries = []
    for group in groups:
        if group.name in done:
            summaries.append(done[group.name])
            continue
        log.info("audit group %s: %d read unit(s)", group.name, len(group.units))
        summaries.append(run_group(config, plan, group, first if group.index == 0 else None, identities))
        progress.group_done(summaries[-1]["rows_audited"], (summaries[-1].get("status") or {}).get("ok", 0))
    run_clean(config, plan, split_files(groups), groups[0].sources)

    total = sum_summaries(summaries)
    warning = plan.model.get("model_warning")
    if warning:
        total["model_warning"] = warning
    total.update(groups=len(groups), groups_reused=len(done), groups_run=len(groups) - len(done))
    wall_s = time.monotonic() - started
    summary = account(
        total,
        sum(s["metrics"]["rows_in"] for s in summaries),
        sum(s["metrics"]["rows_audited"] for s in summaries),
        wall_s,
    )
    write_json(summary_path(out), summary)
    return summary, wall_s
