"""Turn `runner.name` + `runner.options` into a Beam runner and pipeline options."""
from __future__ import annotations

import contextlib
import io

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

# Beam 2.77's DirectRunner first tries to download the Prism runner and falls back when
# it can't; naming the FnApiRunner pins the local engine. `DirectRunner` here means the
# same engine, which honours `direct_running_mode` (in_memory | multi_processing).
LOCAL_RUNNERS = frozenset({"FnApiRunner", "DirectRunner"})
KNOWN_RUNNERS = LOCAL_RUNNERS | {"PortableRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PrismRunner"}


def make_runner(name: str):
    if name in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return name  # PortableRunner, DataflowRunner, FlinkRunner...: Beam resolves the name


def make_options(options: dict) -> PipelineOptions:
    flat = {key: value for key, value in options.items() if value is not None}
    return PipelineOptions.from_dictionary(flat)


def make_pipeline(runner) -> beam.Pipeline:
    """An empty pipeline on the config's runner (`runner.name`, `runner.options`)."""
    return beam.Pipeline(runner=make_runner(runner.name), options=make_options(runner.options))


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
