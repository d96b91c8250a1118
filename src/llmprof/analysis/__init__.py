"""From an export's rows to tables and numbers: extraction to Parquet, nsys-equal summaries, metrics, findings.

Works on Arrow batches and frames; reads the export only through :mod:`llmprof.nsys` and draws nothing.
"""
