"""Turn `runner.name` + `runner.options` into a Beam runner and pipeline options."""
from __future__ import annotations

import contextlib
import io

from apache_beam.options.pipeline_options import PipelineOptions

# Beam 2.77's DirectRunner first tries to download the Prism runner and falls back when
# it can't; naming the FnApiRunner pins the local engine. `DirectRunner` here means the
# same engine, which honours `direct_running_mode` (in_memory | multi_processing).
_LOCAL = {"FnApiRunner", "DirectRunner"}
KNOWN_RUNNERS = _LOCAL | {"PortableRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PrismRunner"}


def make_runner(name: str):
    if name in _LOCAL:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return name  # PortableRunner, DataflowRunner, FlinkRunner...: Beam resolves the name


def make_options(options: dict) -> PipelineOptions:
    flat = {key: value for key, value in options.items() if value is not None}
    return PipelineOptions.from_dictionary(flat)


def check_runner(name: str, options: dict) -> str | None:
    """What is wrong with a runner name and its options, naming the key; None if nothing.

    Beam itself ignores an unknown option with a log line and answers a bad value with
    its whole usage text; both are config errors here.
    """
    if name not in KNOWN_RUNNERS and "." not in name:  # a dotted path names a runner class
        return f"runner.name: unknown runner '{name}' (known: {', '.join(sorted(KNOWN_RUNNERS))})"
    try:
        with contextlib.redirect_stderr(io.StringIO()) as usage:
            known = make_options(options).get_all_options()
    except SystemExit:
        lines = [line for line in usage.getvalue().splitlines() if "error:" in line]
        return f"runner.options: {lines[-1].split('error:', 1)[1].strip() if lines else 'invalid value'}"
    for key in options:
        if key not in known:
            return f"runner.options.{key}: not a Beam pipeline option"
    return None
