"""`laion-audit`: the command line. Subcommands map one-to-one onto pipelines."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.config import ConfigError, load_config
from transforms.paths import local_only

EXIT_CONFIG = 2


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set or [])
    # Beam is imported only once the config is known to be good: errors come back fast.
    from pipelines.audit import run_audit

    _check_lists(config.takedown.lists)
    if args.dry_run:  # checks and builds everything offline; runs and writes nothing
        from pipelines.dry_run import dry_run

        print("\n".join(dry_run(config, args.config).lines()))
        return 0
    run = run_audit(config, fresh=args.fresh)
    print_summary(run.summary, config.output.path)
    report_unaccounted(run.summary)
    return 0 if run.summary["all_rows_accounted"] else 1


def _cmd_request(args: argparse.Namespace) -> int:
    from transforms.request import request_entries, write_request

    embed_fn = None
    if args.with_embedding:
        embed_fn = _image_embedder(args.model, args.pretrained)
    try:
        entries, warnings = request_entries(args.photos, args.list_id, args.reason,
                                            with_embedding=args.with_embedding, embed_fn=embed_fn)
    except OSError as err:
        print(f"laion-audit: cannot read photo: {err.strerror} ({err.filename})", file=sys.stderr)
        return EXIT_CONFIG
    write_request(entries, args.out)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    kinds: dict[str, int] = {}
    for entry in entries:
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    described = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
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
    from transforms.read import DatasetSpec

    runner = runner_config(args)  # before anything is read: a bad runner fails fast
    spec = DatasetSpec(url_col=args.url_col, id_col=args.id_col, format=args.format)
    counts = run_apply(args.removals, args.input, args.out, spec, runner)
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
    summary = run_rematch(plan, runner)
    print_summary(summary, args.out)
    if not plan.inputs:
        print("clean/ not written: the audited dataset is not readable here (name it with --input)")
    report_unaccounted(summary)
    return 0 if summary["all_rows_accounted"] else 1


def runner_config(args: argparse.Namespace):
    """The runner of `rematch` / `apply`: --config's `runner` section, then --runner,
    then each --set (runner.* keys only), checked as `run` checks its runner. Only the
    runner section is read: the dataset, lists, thresholds and policies come from the
    audit and the flags, so an audit's own config can be given as is (its other sections
    are not validated; a top-level name that is no section of a config is refused)."""
    from pydantic import ValidationError

    from pipelines.config import AuditConfig, RunnerConfig, _one_line, apply_override, read_config_file
    from pipelines.runners import check_runner

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
        raise ConfigError(f"runner.{_one_line(err)}") from None
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="laion-audit", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's progress")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="audit a dataset as a config file says")
    run.add_argument("config", help="YAML config file (see configs/)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (dotted; YAML value)")
    run.add_argument("--fresh", action="store_true",
                     help="start over: clear the outputs (a local run otherwise resumes a killed run of the same config)")
    run.add_argument("--dry-run", action="store_true",
                     help="check the config and build the whole pipeline offline; print its stages; "
                          "run, write and list nothing (remote paths: syntax only)")
    run.set_defaults(handler=_cmd_run)

    request = commands.add_parser(
        "request", help="hash your own photos into a takedown request (hashes only, made on this machine)")
    request.add_argument("photos", nargs="+", metavar="PHOTO")
    request.add_argument("--out", required=True, help="request file (.parquet, .csv or .jsonl)")
    request.add_argument("--list-id", default="request", help="the list's name (default: request)")
    request.add_argument("--reason", default=None, help="a reason to give, e.g. 'clinical photo'")
    request.add_argument("--with-embedding", action="store_true",
                         help="add a CLIP embedding (reveals more than a hash)")
    request.add_argument("--model", default="ViT-B-32", help="open_clip model for --with-embedding")
    request.add_argument("--pretrained", default=None, help="open_clip tag or checkpoint path for --with-embedding")
    request.set_defaults(handler=_cmd_request)

    apply = commands.add_parser("apply", help="clean a copy of a dataset with a published removal list")
    apply.add_argument("--removals", required=True, metavar="PUBLISHED_DIR", help="an audit's published/ folder")
    apply.add_argument("--input", required=True, nargs="+", metavar="DATASET", help="dataset files or globs")
    apply.add_argument("--out", required=True, metavar="CLEAN", help="folder for the cleaned files")
    apply.add_argument("--url-col", default="URL")
    apply.add_argument("--id-col", default=None)
    apply.add_argument("--format", default=None, choices=["parquet", "csv", "tsv", "jsonl"])
    _add_runner_args(apply)
    apply.set_defaults(handler=_cmd_apply)

    rematch = commands.add_parser("rematch", help="match an audit's stored hashes against new lists (offline)")
    rematch.add_argument("--audit", required=True, metavar="AUDIT_DIR", help="an audit's output.path")
    rematch.add_argument("--lists", required=True, nargs="+", metavar="FILE", help="takedown list files")
    rematch.add_argument("--out", required=True, metavar="OUT_DIR")
    rematch.add_argument("--input", nargs="+", default=None, metavar="DATASET",
                         help="the audited dataset, for clean/ (default: as recorded in the audit)")
    rematch.add_argument("--pdq-max-distance", type=int, default=None, help="default: as the audit ran")
    rematch.add_argument("--phash-max-distance", type=int, default=None, help="default: as the audit ran")
    rematch.add_argument("--clip-min-cosine", type=float, default=None, help="default: as the audit ran")
    _add_runner_args(rematch)
    rematch.set_defaults(handler=_cmd_rematch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except ConfigError as err:
        print(f"laion-audit: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
