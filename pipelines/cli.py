"""`laion-audit`: the command line. Subcommands map one-to-one onto pipelines."""
from __future__ import annotations

import argparse
import logging
import sys

from pipelines.config import ConfigError, load_config

EXIT_CONFIG = 2


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set or [])
    # Beam is imported only once the config is known to be good: errors come back fast.
    from pipelines.audit import run_audit
    from transforms.read import DatasetError

    try:
        run = run_audit(config)
    except DatasetError as err:
        raise ConfigError(str(err)) from None
    print_summary(run.summary, config.output.path)
    return 0 if run.summary["all_rows_accounted"] else 1


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
    print(f"outputs: {output}  (audit/, report/summary.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="laion-audit", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's progress")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="audit a dataset as a config file says")
    run.add_argument("config", help="YAML config file (see configs/)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (dotted; YAML value)")
    run.set_defaults(handler=_cmd_run)
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
