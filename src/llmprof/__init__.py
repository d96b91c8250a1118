"""llmprof: reproducible profiling of LLM inference on NVIDIA GPUs.

The analysis half reads an Nsight Systems SQLite export into typed Parquet
tables, nsys-equal summaries and headline metrics, draws figures and writes a
report with findings. The public API is below; each stage also has a CLI
subcommand (``llmprof --help``).
"""

from __future__ import annotations

from llmprof.analysis.extract import extract
from llmprof.analysis.stats import REPORTS, ReportSkipped, to_csv_text
from llmprof.common.errors import ConfigError, InputError, LlmprofError, SchemaError
from llmprof.common.version import __version__
from llmprof.nsys.export import Export, open_export

__all__ = [
    "REPORTS",
    "ConfigError",
    "Export",
    "InputError",
    "LlmprofError",
    "ReportSkipped",
    "SchemaError",
    "__version__",
    "extract",
    "open_export",
    "to_csv_text",
]
