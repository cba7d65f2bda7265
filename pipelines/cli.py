"""laion-audit: the command line. Subcommands map one-to-one onto pipelines.

Exit codes: 0 done; 1 rows not accounted (the counts disagree); 2 a usage, config or
input error (one line naming the key or the file); 3 an internal error (one line, and
the path of a log file holding the traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import traceback
from pathlib import Path

from pipelines.config import ConfigError, load_config
from pipelines.log_files import LogFolderError, log_path
from transforms.paths import local_only

EXIT_OK = 0
EXIT_UNACCOUNTED = 1
EXIT_CONFIG = 2  # usage, config and input errors
EXIT_INTERNAL = 3

log = logging.getLogger(__name__)

ABOUT = """\
laion-audit checks a web-scale image-text dataset (LAION-5B and its kin: parquet, csv,
tsv or jsonl files of image URLs and captions) for images that were never meant to be
public, such as clinical photos, identity documents and photos of children, and honours
takedown requests that carry only hashes. It writes every row's verdict (keep, review,
remove), a list of removed rows that is safe to publish, a cleaned copy of the dataset
and a report to open in a browser.

A first session, in order:
  make demo                                   a whole audit on this machine, offline
  make test                                   the test suite
  laion-audit run configs/local.yaml --set dataset.input=ROWS.parquet --set output.path=OUT
                                              audit your own parquet files
  laion-audit request my_photo.jpg --out request.parquet
                                              hash your own photo into a takedown request
  laion-audit apply --removals OUT/published --input my-copy/*.parquet --out my-copy-clean
                                              clean your copy with a published list

Each command's --help says what it does, with an example.
"""

EXIT_CODES = """\
exit codes:
  0  done
  1  rows not accounted: the row counts disagree (the message says which)
  2  usage, config or input error (one line naming the key or the file)
  3  internal error (one line, and the path of a log file with the traceback)
"""


class UsageError(Exception):
    """An argument that cannot work, found before any work is done (exit 2)."""


class InputError(Exception):
    """An input file that cannot be read, in one line naming it (exit 2)."""


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set or [])
    # Beam is imported only once the config is known to be good: errors come back fast.
    from pipelines.audit import run_audit
    from pipelines.progress import Progress

    _check_lists(config.takedown.lists)
    if args.dry_run:  # checks and builds everything offline; runs and writes nothing
        from pipelines.dry_run import dry_run

        print("\n".join(dry_run(config, args.config).lines()))
        return 0
    with _beam_output(args):
        progress = None if args.quiet else Progress(interval_s=args.progress_every)
        try:
            run = run_audit(config, fresh=args.fresh, progress=progress)
        except BaseException:
            if progress is not None:
                progress.finish(last_line=False)  # the error is what is shown
            raise
        if progress is not None:
            progress.finish()
    if not args.quiet:
        print_summary(run.summary, config.output.path)
    report_unaccounted(run.summary)
    return 0 if run.summary["all_rows_accounted"] else 1


REQUEST_FORMATS = ("parquet", "csv", "jsonl")


def check_request_args(args: argparse.Namespace) -> str:
    """`request`'s arguments checked before any photo is hashed; returns the list id.
    Raises UsageError naming the argument."""
    from transforms.takedown import TakedownListError, list_format_of

    list_id = (args.list_id or "").strip()
    if not list_id:
        raise UsageError("request: --list-id must not be empty (it names the list in every entry)")
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"request: --out '{args.out}' is a folder; name a file")
    try:
        fmt = list_format_of(args.out)
    except TakedownListError:
        fmt = None
    if fmt not in REQUEST_FORMATS:
        raise UsageError(f"request: --out '{args.out}': name a .parquet, .csv or .jsonl file "
                         "(the format comes from the extension)")
    if not out.parent.is_dir():
        raise UsageError(f"request: --out '{args.out}': no such folder '{out.parent}'")
    for photo in args.photos:
        path = Path(photo)
        if not path.is_file():
            raise UsageError(f"request: photo '{photo}': no such file" if not path.exists()
                             else f"request: photo '{photo}' is not a file")
        if out.exists() and path.resolve() == out.resolve():
            raise UsageError(f"request: --out '{args.out}' is one of the photos")
    return list_id


def _cmd_request(args: argparse.Namespace) -> int:
    list_id = check_request_args(args)
    from transforms.request import request_entries, write_request

    embed_fn = None
    if args.with_embedding:
        embed_fn = _image_embedder(args.model, args.pretrained)
    try:
        entries, warnings = request_entries(args.photos, list_id, args.reason,
                                            with_embedding=args.with_embedding, embed_fn=embed_fn)
    except OSError as err:
        raise InputError(f"cannot read photo '{err.filename}': {err.strerror}") from None
    write_request(entries, args.out)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    kinds: dict[str, int] = {}
    for entry in entries:
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    described = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    if not args.quiet:
        print(f"wrote {len(entries)} entries ({described}) for {len(args.photos)} photo(s) to {args.out}")
        kept = "hashes and an embedding" if args.with_embedding else "hashes only"
        print(f"the file holds {kept}: no image, file name, path or EXIF")
    return 0


def _image_embedder(model_name: str, pretrained: str | None):
    """embed_fn(PIL image) -> unit vector, through the audit's own handler: the same
    preprocessing and model as the audit's embedding stage, so clip entries compare."""
    from transforms.embed import OpenClipImageHandler

    handler = OpenClipImageHandler(model_name, pretrained, "cpu")
    model = handler.load_model()
    return lambda image: handler.run_inference([image], model)[0]


def _cmd_apply(args: argparse.Namespace) -> int:
    from pipelines.apply import run_apply
    from transforms.dataset_files import DatasetSpec

    runner = runner_config(args)  # before anything is read: a bad runner fails fast
    spec = DatasetSpec(url_col=args.url_col, id_col=args.id_col, format=args.format)
    with _beam_output(args):
        counts = run_apply(args.removals, args.input, args.out, spec, runner)
    if not args.quiet:
        print(f"cleaned {counts['files']} file(s) into {args.out}: kept {counts['rows_kept']} rows, "
              f"dropped {counts['rows_dropped']}")
    return 0


def _cmd_rematch(args: argparse.Namespace) -> int:
    from pipelines.rematch import plan_rematch, run_rematch
    from transforms.takedown import TakedownListError

    runner = runner_config(args)  # before the audit is read: a bad runner fails fast
    missing = [p for p in local_only(args.lists) if not Path(p).exists()]
    if missing:
        raise ConfigError(f"--lists: no such file '{missing[0]}'")
    try:  # planning reads the audit's manifest: a missing or bad one fails here, naming it
        plan = plan_rematch(args.audit, args.lists, args.out, args.input,
                            pdq=args.pdq_max_distance, phash=args.phash_max_distance, clip=args.clip_min_cosine)
    except TakedownListError as err:  # planning loads the lists: a bad entry fails here
        raise ConfigError(f"takedown.lists: {err}".splitlines()[0]) from None
    except ValueError as err:  # ManifestError included
        raise ConfigError(str(err).splitlines()[0]) from None
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    with _beam_output(args):
        summary = run_rematch(plan, runner)
    if not args.quiet:
        print_summary(summary, args.out)
        if not plan.inputs:
            print("clean/ not written: the audited dataset is not readable here (name it with --input)")
    report_unaccounted(summary)
    return 0 if summary["all_rows_accounted"] else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from apache_beam.io.filesystems import FileSystems

    from pipelines.report import write_report
    from transforms.write import summary_path

    summary = summary_path(args.output)
    if not FileSystems.exists(summary):
        raise InputError(f"no run summary '{summary}' (not a laion-audit output, or the run did not finish)")
    path = write_report(args.output, read_summary(summary))
    if not args.quiet:
        print(f"report: {path}")
    return 0


def read_summary(path: str) -> dict:
    """A run's summary.json, checked to be one (a dict of its counts); InputError naming
    the file otherwise."""
    from transforms.write import read_json

    try:
        summary = read_json(path)
    except (OSError, ValueError) as err:  # not readable, not JSON, not UTF-8
        raise InputError(f"{path}: {err}".splitlines()[0]) from None
    if not (isinstance(summary, dict) and isinstance(summary.get("status"), dict)
            and isinstance(summary.get("rows_in"), int) and isinstance(summary.get("report", {}), dict)):
        raise InputError(f"{path}: not a laion-audit summary (no status and rows_in counts)")
    return summary


@contextlib.contextmanager
def _beam_output(args: argparse.Namespace):
    """While pipelines run: without -v, what Beam and its worker processes print goes to
    the log file, not the screen."""
    if args.verbose:
        yield
        return
    from pipelines.progress import workers_to_log

    with workers_to_log(log_path()):
        yield


def runner_config(args: argparse.Namespace):
    """The runner of `rematch` / `apply`: --config's `runner` section, then --runner,
    then each --set (runner.* keys only), checked as `run` checks its runner. Only the
    runner section is read: the dataset, lists, thresholds and policies come from the
    audit and the flags, so an audit's own config can be given as is (its other sections
    are not validated; a top-level name that is no section of a config is refused)."""
    from pydantic import ValidationError

    from pipelines.apply import IN_PROCESS_RUNNERS
    from pipelines.config import AuditConfig, RunnerConfig, apply_override, read_config_file
    from transforms.data_file import one_line

    data: dict = {}
    if args.config is not None:
        data = read_config_file(args.config)
        unknown = sorted(str(key) for key in data if key not in AuditConfig.model_fields)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown key")
    section = data.get("runner") or {}
    if not isinstance(section, dict):
        raise ConfigError("runner: must be a mapping (name, options)")
    raw = {"runner": dict(section)}
    if args.runner is not None:
        raw["runner"]["name"] = args.runner
    for assignment in args.set or []:
        key = assignment.partition("=")[0].strip()
        if key != "runner" and not key.startswith("runner."):
            raise ConfigError(f"--set {key or assignment!r}: {args.command} takes runner.* keys only")
        apply_override(raw, assignment)
    if not isinstance(raw["runner"], dict):
        raise ConfigError("runner: must be a mapping (name, options)")
    try:
        runner = RunnerConfig.model_validate(raw["runner"])
    except ValidationError as err:
        raise ConfigError(f"runner.{one_line(err)}") from None
    if runner.options or runner.name not in IN_PROCESS_RUNNERS:  # a bare local runner needs no Beam to check
        from pipelines.runners import check_runner

        problem = check_runner(runner.name, runner.options)
        if problem:
            raise ConfigError(problem)
    return runner


def _add_runner_args(parser: argparse.ArgumentParser) -> None:
    """--config / --runner / --set for `rematch` and `apply` (see runner_config)."""
    parser.add_argument("--config", default=None, metavar="CONFIG",
                        help="YAML config whose runner section to run on (its other sections are not read)")
    parser.add_argument("--runner", default=None, metavar="NAME",
                        help="runner.name (default FnApiRunner, in memory); applied after --config")
    parser.add_argument("--set", action="append", metavar="runner.KEY=VALUE",
                        help="override a runner key, e.g. runner.options.direct_num_workers=4 (YAML value)")


def report_unaccounted(summary: dict) -> None:
    """When the row counts disagree, say on stderr which counts and their values, so the
    exit code 1 that follows comes with its reason."""
    if summary["all_rows_accounted"]:
        return
    mismatch = summary.get("count_mismatch") or {}
    counts = ", ".join(f"{name}={value}" for name, value in mismatch.items()) or "counts not recorded"
    print(f"laion-audit: rows not accounted: {counts}", file=sys.stderr)


def _check_lists(paths: list[str]) -> None:
    """Load local takedown lists once before launching: a bad entry fails here, by file,
    line and entry, rather than on every worker."""
    from transforms.takedown import TakedownListError, load_lists

    local = local_only(paths)  # remote lists: hashed for the manifest at launch, parsed on the workers
    try:
        load_lists(local)
    except (TakedownListError, ValueError) as err:
        raise ConfigError(f"takedown.lists: {err}".splitlines()[0]) from None


def print_summary(summary: dict, output: str) -> None:
    """The run's numbers in a few lines, and where its outputs and report are."""
    from pipelines.report import report_path

    statuses = ", ".join(f"{k}={v}" for k, v in sorted(summary["status"].items()))
    actions = ", ".join(f"{k}={v}" for k, v in sorted(summary.get("action", {}).items()))
    accounted = "yes" if summary["all_rows_accounted"] else "NO"
    print(f"rows in: {summary['rows_in']}  rows audited: {summary['rows_audited']}  all accounted: {accounted}")
    print(f"status: {statuses}")
    if actions:
        print(f"action: {actions}")
    if summary.get("wall_s"):
        print(f"wall: {summary['wall_s']:.1f} s  ({summary['rows_per_s']:.1f} rows/s)")
    if summary.get("matched_lists"):
        lists = ", ".join(f"{k}={v}" for k, v in sorted(summary["matched_lists"].items()))
        print(f"rows matched per takedown list: {lists}")
    print(f"outputs: {output}  (audit/, review/, removals/, published/, clean/, "
          f"report/summary.json, report/manifest.json)")
    print(f"report: {report_path(output)}  (open it in a browser; safe to share)")


def _command(commands, name: str, summary: str, description: str, example: str, common) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=summary, description=description, parents=[common],
        epilog=f"example:\n  {example}\n\n{EXIT_CODES}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _verbosity_args(parser: argparse.ArgumentParser, default) -> None:
    """-v / -q on `parser`, each excluding the other."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="show Beam's and its workers' log lines on the screen")
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="print nothing but errors: no progress line, no summary")


def _version() -> str:
    from pipelines.manifest import package_version

    return f"laion-audit {package_version()}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="laion-audit", description=ABOUT, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    # -v / -q work before the subcommand and after it: each subcommand has them too, from
    # `common`, whose SUPPRESS default leaves the top-level value alone unless given.
    _verbosity_args(parser, default=False)
    common = argparse.ArgumentParser(add_help=False)
    _verbosity_args(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(
        commands, "run", "audit a dataset as a config file says",
        "Audit a dataset as a YAML config says: read its rows, fetch and hash each image, score it,\n"
        "flag captions, match takedown lists and decide keep / review / remove. Writes audit/,\n"
        "review/, removals/, published/, clean/ and report/ (summary.json, manifest.json and\n"
        "index.html, a report to open in a browser) under output.path. On this machine a progress\n"
        "line shows rows done, rows/s, ok % and the time left; a killed run started again with\n"
        "the same config resumes.",
        "laion-audit run configs/local.yaml --set dataset.input=rows.parquet --set output.path=out", common)
    run.add_argument("config", help="YAML config file (see configs/)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config key (dotted key, YAML value), e.g. --set fetch.timeout_s=5; repeatable")
    run.add_argument("--fresh", action="store_true",
                     help="start over: clear the outputs (a local run otherwise resumes a killed run of the same config)")
    run.add_argument("--dry-run", action="store_true",
                     help="check the config and build the whole pipeline offline; print its stages; "
                          "run, write and list nothing (remote paths: syntax only)")
    run.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                     help="when not on a terminal, print a progress line this often (default 30)")
    run.set_defaults(handler=_cmd_run)

    request = _command(
        commands, "request", "hash your own photos into a takedown request (hashes only, made on this machine)",
        "Hash your own photos into a takedown request, on this machine: MD5, SHA-256, pHash and PDQ\n"
        "(of every rotation and mirror image), no image, file name, path or EXIF. Send the file to\n"
        "a dataset's operator, who adds it to takedown.lists.",
        "laion-audit request my_photo.jpg --out request.parquet --list-id request-0001 --reason \"clinical photo\"",
        common)
    request.add_argument("photos", nargs="+", metavar="PHOTO", help="the photos to hash (JPEG, PNG, WebP, ...)")
    request.add_argument("--out", required=True, help="request file to write (.parquet, .csv or .jsonl)")
    request.add_argument("--list-id", default="request", help="the list's name, cited by every removal (default: request)")
    request.add_argument("--reason", default=None, help="a reason to give, e.g. 'clinical photo'")
    request.add_argument("--with-embedding", action="store_true",
                         help="add a CLIP embedding (reveals more than a hash)")
    request.add_argument("--model", default="ViT-B-32", help="open_clip model for --with-embedding (default ViT-B-32)")
    request.add_argument("--pretrained", default=None, help="open_clip tag or checkpoint path for --with-embedding")
    request.set_defaults(handler=_cmd_request)

    apply = _command(
        commands, "apply", "clean a copy of a dataset with a published removal list",
        "Clean your copy of a dataset with an audit's published removal list (its published/\n"
        "folder): every file is copied in its own format without the removed rows.",
        "laion-audit apply --removals OUT/published --input my-copy/*.parquet --out my-copy-clean", common)
    apply.add_argument("--removals", required=True, metavar="PUBLISHED_DIR", help="an audit's published/ folder")
    apply.add_argument("--input", required=True, nargs="+", metavar="DATASET", help="dataset files or globs")
    apply.add_argument("--out", required=True, metavar="CLEAN", help="folder for the cleaned files")
    apply.add_argument("--url-col", default="URL", help="the column holding image URLs (default URL)")
    apply.add_argument("--id-col", default=None, help="the column of row keys, when the audit used one")
    apply.add_argument("--format", default=None, choices=["parquet", "csv", "tsv", "jsonl"],
                       help="the files' format (default: from each file's extension)")
    _add_runner_args(apply)
    apply.set_defaults(handler=_cmd_apply)

    rematch = _command(
        commands, "rematch", "match an audit's stored hashes against new lists (offline)",
        "Match an audit's stored hashes against new or changed takedown lists, with no network\n"
        "request and no image, and decide again as the audit did (its manifest's thresholds and\n"
        "policies). Writes the same outputs and report as run, under --out.",
        "laion-audit rematch --audit OUT --lists request.parquet --out OUT2", common)
    rematch.add_argument("--audit", required=True, metavar="AUDIT_DIR", help="an audit's output.path")
    rematch.add_argument("--lists", required=True, nargs="+", metavar="FILE", help="takedown list files")
    rematch.add_argument("--out", required=True, metavar="OUT_DIR", help="folder for the rematch's outputs")
    rematch.add_argument("--input", nargs="+", default=None, metavar="DATASET",
                         help="the audited dataset, for clean/ (default: as recorded in the audit)")
    rematch.add_argument("--pdq-max-distance", type=int, default=None,
                         help="PDQ match distance in bits (default: as the audit ran)")
    rematch.add_argument("--phash-max-distance", type=int, default=None,
                         help="pHash match distance in bits (default: as the audit ran)")
    rematch.add_argument("--clip-min-cosine", type=float, default=None,
                         help="CLIP minimum cosine (default: as the audit ran)")
    _add_runner_args(rematch)
    rematch.set_defaults(handler=_cmd_rematch)

    report = _command(
        commands, "report", "write a run's report/index.html again from its summary",
        "Write OUTPUT_DIR/report/index.html again from the run's report/summary.json and\n"
        "manifest.json: one self-contained page of charts that opens offline and holds no image,\n"
        "no URL or caption of a row and no hash-list value. run and rematch write it at the end.",
        "laion-audit report demo-out", common)
    report.add_argument("output", metavar="OUTPUT_DIR", help="a run's output.path (holding report/summary.json)")
    report.set_defaults(handler=_cmd_report)
    return parser


# What a worker's failure carries when a dataset file could not be read there.
_WORKER_INPUT_ERROR = re.compile(r"DatasetError: (.+?)(?: \[while running|$)", re.MULTILINE)


def _input_error_in(err: BaseException) -> str | None:
    """The one-line DatasetError a pipeline failure wraps (a bad file read on a worker)."""
    found = _WORKER_INPUT_ERROR.search(str(err))
    return found.group(1).strip() if found else None


def _internal_error(err: BaseException) -> int:
    from pipelines.log_files import open_private

    first = (str(err).strip().splitlines() or [""])[0][:300]
    print(f"laion-audit: internal error: {type(err).__name__}: {first}", file=sys.stderr)
    try:
        path = log_path()
        with open_private(path) as handle:
            handle.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))
    except (LogFolderError, OSError) as log_err:
        print(f"laion-audit: no traceback kept: {log_err}", file=sys.stderr)
    else:
        print(f"laion-audit: the traceback is in {path}", file=sys.stderr)
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:  # one before the subcommand, one after it
        parser.error("-v/--verbose and -q/--quiet exclude each other")
    from pipelines.progress import setup_logging, teardown_logging

    try:
        setup_logging(args.verbose, None if args.verbose else log_path())
    except LogFolderError as err:
        print(f"laion-audit: {err}", file=sys.stderr)
        return EXIT_CONFIG if err.config_error else EXIT_INTERNAL
    try:
        return _handle(args)
    finally:  # an in-process caller (a test, a notebook) gets its logging back as it was
        teardown_logging()


def _handle(args: argparse.Namespace) -> int:
    """The subcommand run, its errors turned into one line and an exit code."""
    from transforms.dataset_files import DatasetError

    try:
        return args.handler(args)
    except ConfigError as err:
        print(f"laion-audit: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except UsageError as err:
        print(f"laion-audit: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except (InputError, DatasetError) as err:
        message = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"laion-audit: input error: {message}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("laion-audit: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line and a log
        found = _input_error_in(err)
        if found:
            log.debug("input error on a worker", exc_info=err)
            print(f"laion-audit: input error: {found}", file=sys.stderr)
            return EXIT_CONFIG
        return _internal_error(err)


if __name__ == "__main__":
    sys.exit(main())
