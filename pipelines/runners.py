"""Turn `runner.name` + `runner.options` into a Beam runner and pipeline options."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

# Beam 2.77's DirectRunner first tries to download the Prism runner and falls back when
# it can't; naming the FnApiRunner pins the local engine. `DirectRunner` here means the
# same engine, which honours `direct_running_mode` (in_memory | multi_processing).
_LOCAL = {"FnApiRunner", "DirectRunner"}


def make_runner(name: str):
    if name in _LOCAL:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return name  # PortableRunner, DataflowRunner, FlinkRunner...: Beam resolves the name


def make_options(options: dict) -> PipelineOptions:
    flat = {key: value for key, value in options.items() if value is not None}
    return PipelineOptions.from_dictionary(flat)
