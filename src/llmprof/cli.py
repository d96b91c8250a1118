"""The ``llmprof`` command: one thin subcommand per stage over the library.

Library errors become one ``Error: ...`` line and exit status 1 (a traceback
only with ``--debug``).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from llmprof.common.errors import InputError, LlmprofError
from llmprof.common.outputs import refuse_existing, staged_file, write_text_files
from llmprof.common.progress import enable_bars
from llmprof.common.version import __version__

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("llmprof")


def _setup_logging(log_file: Path | None, quiet: bool) -> None:
    handlers: list[logging.Handler] = [logging.NullHandler()]
    if not quiet:
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    enable_bars(sys.stderr.isatty() and not quiet)  # a terminal gets bars; logs get periodic lines with totals


def _record_in_log_file(message: str) -> None:
    """Put the error in the --log file too (the terminal gets click's single Error: line)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def printable(text: str) -> str:
    """Text safe to print: bytes of a file name that are not UTF-8 shown as ``\\xNN`` escapes."""
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the file name's own bytes
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def common_options(func: F) -> F:
    """--force, --log, --quiet and --debug, spelled the same on every subcommand."""

    @click.option("--force", is_flag=True, help="Replace the output if it exists.")
    @click.option("--log", "log_file", type=click.Path(path_type=Path), help="Also write the log to this file.")
    @click.option("--quiet", is_flag=True, help="Log nothing to the terminal.")
    @click.option("--debug", is_flag=True, help="Show a traceback on errors.")
    @functools.wraps(func)
    def wrapper(*args: Any, log_file: Path | None, quiet: bool, debug: bool, **kwargs: Any) -> Any:
        _setup_logging(log_file, quiet)
        try:
            return func(*args, **kwargs)
        except LlmprofError as exc:
            if debug:
                raise
            message = " ".join(printable(str(exc)).split())  # one line, whatever the message holds
            _record_in_log_file(message)
            raise click.ClickException(message) from exc

    return wrapper  # type: ignore[return-value]


def root_option(help_text: str) -> Callable[[F], F]:
    return click.option("--root", type=click.Path(path_type=Path), default=Path("."), show_default=True, help=help_text)


def out_option(help_text: str, required: bool = True) -> Callable[[F], F]:
    return click.option("-o", "--out", type=click.Path(path_type=Path), required=required, help=help_text)


def prefixed_files(out: Path | None, names: list[str], extension: str, force: bool, stage: str) -> dict[str, Path]:
    """``PREFIX_<name>.<extension>`` per name, as nsys names its per-report files (none without a prefix); one
    that exists is refused now, before the work, not after some files are written."""
    if out is None:
        return {}
    targets = {name: Path(f"{out}_{name}.{extension}") for name in names}
    for target in targets.values():
        refuse_existing(target, force, stage)
    return targets


def write_all(written: dict[Path, str], force: bool, stage: str) -> None:
    """Write the texts of a stage's per-report files, each logged."""
    for path in write_text_files(written, force, stage):
        log.info("wrote %s", path)


@click.group()
@click.version_option(__version__, prog_name="llmprof")
def main() -> None:
    """Profile LLM inference on NVIDIA GPUs: Nsight Systems captures to tables, figures and reports."""


@main.command()
@click.argument("sqlite", metavar="EXPORT", type=click.Path(path_type=Path))
@click.option(
    "-r",
    "--report",
    "reports",
    default="cuda_gpu_kern_sum,cuda_api_sum,cuda_gpu_mem_time_sum,cuda_gpu_mem_size_sum,nvtx_sum,osrt_sum",
    show_default=True,
    help="Comma-separated reports (as for nsys stats -r); 'all' for every report.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "table"]),
    default="table",
    show_default=True,
    help="csv prints what `nsys stats --format csv` prints.",
)
@click.option(
    "--timeunit",
    type=click.Choice(["ns", "us", "ms", "s", "nsec", "usec", "msec", "sec"]),
    default="ns",
    show_default=True,
    help="The unit of time columns, as nsys stats --timeunit: values scaled, headers say the unit.",
)
@out_option("Write PREFIX_<report>.csv (or .txt) instead of printing.", required=False)
@common_options
def stats(sqlite: Path, reports: str, fmt: str, timeunit: str, out: Path | None, force: bool) -> None:
    """nsys stats without nsys: summary reports of an SQLite export (or of an .nsys-rep, exported with nsys).

    A report whose data is absent is announced as SKIPPED (as nsys does) and is not an error.
    """
    from llmprof.analysis.stats import run_reports, select_reports
    from llmprof.nsys.convert import readable_export

    names = [report.name for report in select_reports(reports)]
    targets = prefixed_files(out, names, "csv" if fmt == "csv" else "txt", force, "stats")
    written: dict[Path, str] = {}
    with readable_export(sqlite) as export:
        results = run_reports(export, reports, fmt, timeunit)
    for result in results:
        name = result.report.name
        if result.text is None:
            click.echo(f"SKIPPED: {result.skipped}", err=True)
        if out is not None:
            written[targets[name]] = result.text or ""
        elif result.text is not None:
            click.echo(f"\n ** {name}:\n" if fmt == "table" else "", nl=False)
            click.echo(result.text, nl=False)
    write_all(written, force, "stats")


@main.command()
@click.argument("sqlite", type=click.Path(path_type=Path))
@click.option(
    "-r",
    "--rule",
    "rules",
    default="all",
    show_default=True,
    help="Comma-separated rules with options, as for nsys analyze -r (gpu_gaps:gap=100,cuda_api_sync:rows=-1).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["column", "csv", "json"]),
    default=None,
    help="Default: column on the terminal, csv into files (as nsys analyze).",
)
@out_option("Write PREFIX_<rule>.<format> per rule instead of printing.", required=False)
@common_options
def analyze(sqlite: Path, rules: str, fmt: str | None, out: Path | None, force: bool) -> None:
    """nsys analyze without nsys: Nsight Systems' expert rules on an export (SQLite, or .nsys-rep via nsys).

    A rule whose data is absent is announced as SKIPPED (as nsys does) and is not an error.
    """
    from llmprof.analysis.expert import parse_rules, run_rule
    from llmprof.nsys.convert import readable_export
    from llmprof.nsys.export import open_export
    from llmprof.render.expert import render

    fmt = fmt or ("column" if out is None else "csv")
    chosen = parse_rules(rules)
    extension = {"column": "txt", "csv": "csv", "json": "json"}[fmt]
    targets = prefixed_files(out, [tag for _, _, tag in chosen], extension, force, "analyze")
    written: dict[Path, str] = {}
    with readable_export(sqlite) as readable, open_export(readable) as export:
        for name, options, tag in chosen:
            result = run_rule(export, name, options)
            click.echo(f"Processing [{printable(str(sqlite))}] with [{name}]... ")
            if result.error is not None:
                click.echo(f"SKIPPED: {printable(result.error)}\n")
            elif out is not None:
                written[targets[tag]] = render(result, fmt, options)
            else:
                click.echo(render(result, fmt, options), nl=False)
    write_all(written, force, "analyze")


@main.command()
@click.argument("report", type=click.Path(path_type=Path))
@out_option("The .sqlite file to write.")
@click.option("--nsys", default="nsys", show_default=True, help="The nsys executable.")
@common_options
def export(report: Path, out: Path, nsys: str, force: bool) -> None:
    """Convert an .nsys-rep report to SQLite (needs nsys)."""
    from llmprof.nsys.convert import export_sqlite

    export_sqlite(report, out, nsys=nsys, force=force)


@main.command()
@click.argument("sqlite", metavar="EXPORT", type=click.Path(path_type=Path))
@out_option("The folder to write the Parquet tables and metrics.json into.")
@click.option(
    "--category",
    "categories",
    multiple=True,
    metavar="NAME=REGEX",
    help="Kernel category pattern, repeatable; when given, these replace the default patterns (in order).",
)
@click.option("--record", type=click.Path(path_type=Path), help="The profiled run's run.json (captured iterations).")
@click.option("--baseline", type=click.Path(path_type=Path), help="The untraced run's run.json (corrected busy share).")
@common_options
def extract(
    sqlite: Path, out: Path, categories: tuple[str, ...], record: Path | None, baseline: Path | None, force: bool
) -> None:
    """Extract typed Parquet tables, nsys-equal summaries and metrics from an SQLite export (or an .nsys-rep,
    exported with nsys)."""
    from llmprof.analysis.extract import extract as run_extract
    from llmprof.nsys.convert import readable_export

    patterns = None
    if categories:
        patterns = {}
        for item in categories:
            name, sep, pattern = item.partition("=")
            if not sep:
                raise click.BadParameter(f"{item!r}: expected NAME=REGEX", param_hint="--category")
            patterns[name] = pattern
    with readable_export(sqlite) as export:
        metrics = run_extract(
            export, out, categories=patterns, record=record, baseline=baseline, force=force, progress=True
        )
    tables: dict[str, int] = metrics["tables"]
    log.info("%s: %s", out, ", ".join(f"{k} {v}" for k, v in tables.items()))


@main.command()
@click.argument("extract_dir", type=click.Path(path_type=Path))
@out_option("The folder to write the figures into (PNG and SVG).")
@common_options
def figures(extract_dir: Path, out: Path, force: bool) -> None:
    """Draw the figures of one run from its extract folder."""
    from llmprof.render.figures import draw_figures

    for path in draw_figures(extract_dir, out, force=force):
        log.info("wrote %s", path)


@main.command()
@click.argument("extract_dir", type=click.Path(path_type=Path))
@out_option("The folder to write report.md, report.html and findings.json into.")
@click.option("--figures", "figures_dir", type=click.Path(path_type=Path), help="The run's figures folder to embed.")
@click.option("--run", "run_name", help="The run's name in the title (default: the extract folder's parent).")
@click.option("--record", type=click.Path(path_type=Path), help="The profiled run's run.json (workload, traced tok/s).")
@click.option("--baseline", type=click.Path(path_type=Path), help="The untraced run's run.json (profiler overhead).")
@common_options
def report(
    extract_dir: Path,
    out: Path,
    figures_dir: Path | None,
    run_name: str | None,
    record: Path | None,
    baseline: Path | None,
    force: bool,
) -> None:
    """Write the Markdown and HTML report, with findings, of one run."""
    from llmprof.render.report import write_report

    found = write_report(
        extract_dir, out, run=run_name, figures_dir=figures_dir, record=record, baseline=baseline, force=force
    )
    for finding in found:
        log.info("finding: %s", finding.title)


@main.command()
@click.option(
    "--manifest",
    required=True,
    help="The study's runs as JSON: [{run, extract, record?, baseline?, logs?, sweep?}, ...].",
)
@out_option("The study folder (runs.parquet, figures/, report.md, report.html, findings.json).")
@common_options
def study(manifest: str, out: Path, force: bool) -> None:
    """Compare the runs of a study: one table, comparison figures and findings; failed runs are listed."""
    from llmprof.analysis.study import load_manifest
    from llmprof.render.study import write_study

    table = write_study(load_manifest(manifest), out, force=force)
    failed = table[table["status"] == "failed"]["run"].tolist()
    log.info("%s: %d runs%s", out, len(table), f", failed: {', '.join(failed)}" if failed else "")


@main.command()
@click.argument("name")
@click.argument("artifacts", nargs=-1, type=click.Path(path_type=Path))
@click.option("--config", "config_json", required=True, help="The config entry (run) or whole config (study) as JSON.")
@click.option("--record", type=click.Path(path_type=Path), help="The profiled run's run.json (GPU and versions).")
@root_option("The project root (paths are recorded relative to it; its git commit is recorded).")
@out_option("The provenance.json to write.")
@common_options
def provenance(
    name: str, config_json: str, artifacts: tuple[Path, ...], record: Path | None, root: Path, out: Path, force: bool
) -> None:
    """Record what made a run's or study's ARTIFACTS (files, folders): config digest, versions, git, container,
    host, time and the sha256 of every file."""
    from llmprof.evidence.provenance import write_provenance

    config = _json_option(config_json, "--config")
    with staged_file(out, force, "provenance") as partial:
        written = write_provenance(name, config, list(artifacts), partial, root=root, record=record)
    log.info("%s: %d artifacts", out, len(written["artifacts"]))


@main.command()
@click.option(
    "--config",
    "configfile",
    type=click.Path(path_type=Path),
    required=True,
    help="The study's config file (as given to snakemake).",
)
@root_option("The project root holding results/.")
@out_option("The archive to write (.tar.gz).")
@common_options
def archive(configfile: Path, root: Path, out: Path, force: bool) -> None:
    """Pack a study (config, captures, records, Parquet, figures, reports, provenance, checksums) into one file."""
    from llmprof.evidence.archive import pack

    manifest = pack(configfile, out, root=root, force=force)
    log.info("%s: %d files, %d runs", out, len(manifest["files"]), len(manifest["runs"]))


@main.command()
@click.argument("archive_file", type=click.Path(path_type=Path))
@click.option("--no-rebuild", is_flag=True, help="Only check the checksums; do not rebuild the analysis stages.")
@common_options
def verify(archive_file: Path, no_rebuild: bool, force: bool) -> None:
    """Check every checksum of an archive and rebuild its analysis from the captures; name what differs.

    An archive with a member that is unsafe to unpack (a link, a device, a name outside its folder), a member
    its manifest does not list, a listed file missing, or a size past the limits is refused before anything
    is unpacked.
    """
    from llmprof.evidence.archive import verify as run_verify

    result = run_verify(archive_file, rebuild=not no_rebuild)
    for problem in result.problems:
        click.echo(problem)
    click.echo(
        f"{archive_file}: {result.checked} checksums checked, {result.rebuilt} artifacts rebuilt, "
        f"{len(result.problems)} problem(s)"
    )
    if not result.ok:
        raise LlmprofError(f"{archive_file}: verification failed ({len(result.problems)} problem(s), listed above)")


def _json_option(text: str, what: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint=what) from exc
    if not isinstance(value, dict):
        raise click.BadParameter("expected a JSON object", param_hint=what)
    return value


@main.command()
@click.argument("name")
@click.option("--spec", required=True, help="The model's config entry as JSON (source and its keys).")
@out_option("The model folder to write (files and model.json).")
@common_options
def model(name: str, spec: str, out: Path, force: bool) -> None:
    """Fetch or build one model: Hugging Face at a pinned commit, a local folder, or synthetic weights."""
    from llmprof.capture.model import fetch_model

    record = fetch_model(name, _json_option(spec, "--spec"), out, force=force)
    log.info("%s: %d files", out, len(record["files"]))


@main.command()
@click.argument("run")
@click.option("--spec", required=True, help="The run's config entry as JSON (model, engine, workload, ...).")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="The fetched model folder.")
@out_option("The folder to write profile.nsys-rep, run.json, spec.json and profile.log into.")
@click.option("--nsys", default="nsys", show_default=True, help="The nsys executable.")
@common_options
def profile(run: str, spec: str, model_dir: Path, out: Path, nsys: str, force: bool) -> None:
    """Profile a run's steady state under nsys: vLLM generate, or `vllm serve` under load in mode serve (needs a
    GPU and nsys)."""
    from llmprof.capture.profile import profile_run
    from llmprof.capture.serve import serve_profile
    from llmprof.common.config import run_spec

    settings = run_spec(run, _json_option(spec, "--spec"))
    stage = serve_profile if settings.get("mode") == "serve" else profile_run
    record = stage(settings, model_dir, out, nsys=nsys, force=force)
    log.info(
        "%s: %.1f output tok/s traced, %d kernels captured",
        run,
        record["output_tokens_per_s"],
        record["nsys"]["kernels_captured"],
    )


@main.command()
@click.argument("run")
@click.option("--spec", required=True, help="The run's config entry as JSON (model, engine, workload, ...).")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="The fetched model folder.")
@out_option("The run record (JSON) to write.")
@common_options
def baseline(run: str, spec: str, model_dir: Path, out: Path, force: bool) -> None:
    """Run the same workload (or serving load) without nsys, to measure the profiler's overhead (needs a GPU)."""
    from llmprof.capture.profile import baseline_run
    from llmprof.capture.serve import serve_baseline
    from llmprof.common.config import run_spec

    settings = run_spec(run, _json_option(spec, "--spec"))
    stage = serve_baseline if settings.get("mode") == "serve" else baseline_run
    record = stage(settings, model_dir, out, force=force)
    log.info("%s: %.1f output tok/s untraced", run, record["output_tokens_per_s"])


@main.command("run")
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="The fetched model folder.")
@out_option("The run record (JSON) to write.")
@click.option(
    "--profile/--no-profile",
    "with_profile",
    default=False,
    show_default=True,
    help="Open the capture range around the steady-state iterations.",
)
@common_options
def run_command(spec_file: Path, model_dir: Path, out: Path, with_profile: bool, force: bool) -> None:
    """The instrumented vLLM workload itself (what `profile` runs under nsys); SPEC_FILE holds resolved settings."""
    import json

    from llmprof.capture.workload import run_workload

    try:
        spec = json.loads(spec_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{spec_file}: cannot read the run settings ({exc})") from exc
    with staged_file(out, force, "run-record") as partial:
        record = run_workload(spec, model_dir, partial, profile=with_profile)
    log.info("%s: %.1f output tok/s", record["run"], record["output_tokens_per_s"])


@main.command()
@click.option("--base-url", required=True, help="The server, e.g. http://127.0.0.1:8000.")
@click.option("--model", "model_name", required=True, help="The served model name.")
@click.option("--num-prompts", type=click.IntRange(min=1), required=True, help="Requests to send.")
@click.option("--input-len", type=click.IntRange(min=1), required=True, help="Prompt tokens per request.")
@click.option("--output-len", type=click.IntRange(min=1), required=True, help="Tokens to generate per request.")
@click.option("--vocab-size", type=click.IntRange(min=2), required=True, help="The model's vocabulary (prompt ids).")
@click.option("--request-rate", type=click.FloatRange(min=0, min_open=True), help="Requests/s (default: all at once).")
@click.option("--max-concurrency", type=click.IntRange(min=1), help="Most requests in flight (default: no limit).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the prompts and arrival times.")
@click.option("--profile", "with_profile", is_flag=True, help="Open the capture range around the load.")
@out_option("The result JSON to write (the format of `vllm bench serve --save-result`).")
@common_options
def loadgen(
    base_url: str,
    model_name: str,
    num_prompts: int,
    input_len: int,
    output_len: int,
    vocab_size: int,
    request_rate: float | None,
    max_concurrency: int | None,
    seed: int,
    with_profile: bool,
    out: Path,
    force: bool,
) -> None:
    """Drive a serving load (streaming completions of token-id prompts) and measure TTFT, TPOT and ITL."""
    from llmprof.capture.loadgen import Load, generate_load
    from llmprof.common.outputs import write_json

    load = Load(num_prompts, input_len, output_len, vocab_size, request_rate, max_concurrency, seed)
    with staged_file(out, force, "load-result") as partial:
        result = generate_load(base_url.rstrip("/"), model_name, load, profile=with_profile)
        write_json(partial, result)
    log.info("%s: %d of %d requests completed", out, result["completed"], num_prompts)


if __name__ == "__main__":  # pragma: no cover
    main()
