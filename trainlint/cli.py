"""The `trainlint` command line: `check` (the default command), `rule CODE`, `rules`.

Exit codes: 0 no findings, 1 findings (or, with --diff, changes to make), 2 usage
error, bad configuration, a path that does not exist, or an internal error.
Bad input never shows a traceback: one line on stderr says what is wrong
(set TRAINLINT_DEBUG=1 to get the traceback of an internal error).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import click

from trainlint import __version__
from trainlint.config import OUTPUT_FORMATS, CliOptions, ConfigError, split_codes

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def rule_doc(rule) -> str:
    # cleandoc, not dedent: a docstring whose text starts on the quote line still dedents.
    import inspect

    return inspect.cleandoc(rule.doc())


def _error(msg: str) -> None:
    click.echo(f"trainlint: error: {msg}", err=True)


def _warn(msg: str) -> None:
    click.echo(f"trainlint: warning: {msg}", err=True)


class _DefaultCheckGroup(click.Group):
    """`trainlint PATH...` means `trainlint check PATH...` (ruff's habit)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["check", *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=_DefaultCheckGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="trainlint")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """trainlint: find PyTorch training-code pitfalls without running the code.

    `trainlint PATH...` is short for `trainlint check PATH...`.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--select", multiple=True, metavar="CODES", help="Rules to run (codes or prefixes, comma-separated); replaces the default set.")
@click.option("--ignore", multiple=True, metavar="CODES", help="Rules to leave out.")
@click.option("--extend-select", multiple=True, metavar="CODES", help="Rules to add to the selection.")
@click.option("--per-file-ignores", multiple=True, metavar="GLOB:CODES", help="Rules to leave out for matching files, e.g. 'tests/*:TL101,TL2 nb/*.ipynb:TL4'.")
@click.option("--exclude", multiple=True, metavar="GLOBS", help="Files and folders to skip (.gitignore-style globs, comma-separated); replaces the configuration's `exclude`.")
@click.option("--output-format", "--format", "output_format", type=click.Choice(OUTPUT_FORMATS), help="Output format (default: text).")
@click.option("--fix/--no-fix", default=None, help="Apply safe fixes, report what is left.")
@click.option("--unsafe-fixes/--no-unsafe-fixes", default=None, help="With --fix or --diff: apply unsafe fixes too.")
@click.option("--diff", is_flag=True, help="Print the fixes as a unified diff, write nothing (exit 1 if there are any).")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when there are findings.")
@click.option("--statistics", is_flag=True, help="Print counts per rule instead of the findings.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Cache folder (default: .trainlint_cache beside the configuration).")
@click.option("--jobs", "-j", type=click.IntRange(min=0), help="Files linted in parallel (default, and 0: all cores).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Use this pyproject.toml (or TOML file of [tool.trainlint] keys).")
@click.option("--force-exclude/--no-force-exclude", default=None, help="Apply excludes to paths given by name too (for pre-commit).")
@click.option("--stdin-filename", metavar="PATH", help="The name of the file read from standard input ('-').")
@click.option("--quiet", "-q", is_flag=True, help="Print the findings and nothing else.")
def check(**opts) -> None:
    """Lint files, folders and notebooks ('-' reads standard input)."""
    sys.exit(run_check(**opts))


def run_check(**opts) -> int:
    try:
        return _run_check(**opts)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_ERROR
    except BrokenPipeError:
        # `trainlint . | head`: the reader left; stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_FINDINGS
    except Exception as exc:
        if os.environ.get("TRAINLINT_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (TRAINLINT_DEBUG=1 shows the traceback)")
        return EXIT_ERROR


def _split_list(values: Sequence[str]) -> List[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _settings(opts: dict, paths: Sequence[str]):
    from trainlint.config import find_config, load_config_file, parse_per_file_ignores, resolve

    cfg = load_config_file(Path(opts["config_file"])) if opts["config_file"] else find_config(paths)
    cli_opts = CliOptions(
        select=split_codes(opts["select"]) if opts["select"] else None,
        ignore=split_codes(opts["ignore"]),
        extend_select=split_codes(opts["extend_select"]),
        per_file_ignores=parse_per_file_ignores(opts["per_file_ignores"]) if opts["per_file_ignores"] else None,
        exclude=_split_list(opts["exclude"]) if opts["exclude"] else None,
        force_exclude=opts["force_exclude"],
        output_format=opts["output_format"],
        fix=opts["fix"],
        unsafe_fixes=opts["unsafe_fixes"],
        cache_dir=opts["cache_dir"],
        jobs=opts["jobs"] or None,
    )
    return resolve(cfg, cli_opts)


def _fix_mode(settings, diff: bool) -> Optional[str]:
    if not (settings.fix or diff):
        return None
    return "unsafe" if settings.unsafe_fixes else "safe"


def _unified_diff(label: str, old: str, new: str) -> str:
    import difflib

    def lines(s: str) -> List[str]:
        out = s.splitlines(keepends=True)
        if out and not out[-1].endswith(("\n", "\r")):
            out[-1] += "\n\\ No newline at end of file\n"
        return out

    return "".join(difflib.unified_diff(lines(old), lines(new), fromfile=label, tofile=label))


def _report(findings, settings, opts, fixed: int, fix_mode, err: bool = False) -> None:
    from trainlint.report import Summary, render

    summary = Summary(
        fixed=fixed,
        fix_mode=bool(fix_mode),
        unsafe_fixes=settings.unsafe_fixes,
        statistics=opts["statistics"],
        quiet=opts["quiet"],
        root=Path.cwd(),
    )
    out = render(settings.output_format, findings, summary)
    if out:
        click.echo(out, nl=False, err=err)
    if settings.output_format != "text" and fixed and not opts["quiet"]:
        click.echo(f"Fixed {fixed} finding{'s' if fixed != 1 else ''}.", err=True)


def _exit_code(has_findings: bool, opts: dict, errors: bool) -> int:
    if errors:
        return EXIT_ERROR
    if has_findings and not opts["exit_zero"]:
        return EXIT_FINDINGS
    return EXIT_OK


def _run_check(**opts) -> int:
    paths = list(opts["paths"])
    if not paths:
        paths = ["-"] if opts["stdin_filename"] else ["."]
    if "-" in paths and len(paths) > 1:
        raise ConfigError("'-' (standard input) cannot be combined with other paths")
    use_stdin = paths == ["-"]
    config_paths = [opts["stdin_filename"] or "."] if use_stdin else paths
    settings = _settings(opts, config_paths)
    fix_mode = _fix_mode(settings, opts["diff"])
    if use_stdin:
        return _run_stdin(settings, opts, fix_mode)

    from trainlint.discovery import discover
    from trainlint.finding import Finding
    from trainlint.runner import cache_written, lint_files, write_atomic

    found = discover(
        paths,
        root=settings.root,
        exclude=settings.exclude,
        force_exclude=settings.force_exclude,
        respect_gitignore=settings.respect_gitignore,
    )
    errors = False
    for w in found.warnings:
        if not opts["quiet"]:
            _warn(w)
    for m in found.missing:
        _error(f"{m}: no such file or folder")
        errors = True
    if not found.files and not found.missing and not settings.force_exclude and not opts["quiet"]:
        _warn("no Python files or notebooks found under the given paths")

    cache = None
    if not opts["no_cache"]:
        from trainlint.cache import Cache

        cache = Cache(settings.cache_dir)
    outcomes = lint_files(found.files, settings, cache, fix_mode)

    fixed = 0
    diffs: List[str] = []
    for out in outcomes:
        if out.error:
            _error(f"{out.display}: internal error: {out.error}")
            errors = True
        if out.warning and not opts["quiet"]:
            _warn(out.warning)
        if out.new_content is None:
            continue
        fixed += out.fixed
        if opts["diff"]:
            diffs.extend(_unified_diff(label, old, new) for label, old, new in out.changes)
            continue
        try:
            write_atomic(out.path, out.new_content)
        except OSError as exc:
            _error(f"{out.display}: cannot write fixes: {exc.strerror or exc}")
            errors = True
            continue
        cache_written(cache, out)
    if cache is not None:
        cache.prune()

    if opts["diff"]:
        click.echo("".join(diffs), nl=False)
        if not opts["quiet"]:
            n = sum(o.fixed for o in outcomes if o.new_content is not None)
            click.echo(f"Would fix {n} finding{'s' if n != 1 else ''}." if n else "No fixes available.", err=True)
        return _exit_code(bool(diffs), opts, errors)

    findings = sorted((f for o in outcomes for f in o.findings), key=Finding.sort_key)
    if outcomes or settings.output_format != "text" or not errors:
        _report(findings, settings, opts, fixed, fix_mode)
    return _exit_code(bool(findings), opts, errors)


def _run_stdin(settings, opts, fix_mode: Optional[str]) -> int:
    from trainlint.discovery import Excluder, kind_of, rel_to
    from trainlint.runner import Task, lint_task

    name = opts["stdin_filename"]
    display = name or "-"
    content = sys.stdin.buffer.read()
    stdout = sys.stdout.buffer
    if name:
        path = Path(os.path.normpath(Path.cwd() / name))
        if settings.force_exclude and Excluder(settings.root, settings.exclude).excluded(path, False):
            if fix_mode and not opts["diff"]:
                stdout.write(content)  # an editor piping through --fix gets its text back
            return EXIT_OK
        selected = settings.selected_for(rel_to(path, settings.root) or path.name)
    else:
        selected = settings.selected
    # A named file reads the project's other modules from disk, as a run on the file would.
    real, root = (str(path), str(settings.root)) if name else (None, None)
    cache_dir = None if opts["no_cache"] else str(settings.cache_dir)
    from trainlint.analysis.project import new_run

    new_run()
    out = lint_task(Task(display, kind_of(display), content, selected, fix_mode, real, root, cache_dir))
    if out.error:
        _error(f"{display}: internal error: {out.error}")
        return EXIT_ERROR
    if out.warning and not opts["quiet"]:
        _warn(out.warning)
    if opts["diff"]:
        click.echo("".join(_unified_diff(label, old, new) for label, old, new in out.changes), nl=False)
        return _exit_code(out.new_content is not None, opts, False)
    if fix_mode:
        # Like ruff: the fixed source goes to stdout, the report to stderr.
        stdout.write(out.new_content if out.new_content is not None else content)
        stdout.flush()
        _report(out.findings, settings, opts, out.fixed, fix_mode, err=True)
    else:
        _report(out.findings, settings, opts, 0, fix_mode)
    return _exit_code(bool(out.findings), opts, False)


@cli.command("rule")
@click.argument("code")
def rule_command(code: str) -> None:
    """Print a rule's documentation."""
    from trainlint.registry import get_rule

    rule = get_rule(code)
    if rule is None:
        _error(f"unknown rule code {code!r} (`trainlint rules` lists them)")
        sys.exit(EXIT_ERROR)
    fixable = rule.fixable or "no"
    click.echo(f"{rule.code} {rule.name}\n\nSeverity: {rule.severity}. Fixable: {fixable}. On by default: yes.\n")
    click.echo(rule_doc(rule) or "(no documentation)")


@cli.command("rules")
@click.option("--output-format", "--format", "output_format", type=click.Choice(["text", "json"]), default="text")
def rules_command(output_format: str) -> None:
    """List all rules: code, name, severity, default on, fixable."""
    from trainlint.registry import all_rules

    rows = [
        {
            "code": r.code,
            "name": r.name,
            "severity": r.severity,
            "default": bool(getattr(r, "default_enabled", True)),
            "fixable": r.fixable,
        }
        for r in all_rules().values()
    ]
    if output_format == "json":
        import json

        click.echo(json.dumps(rows, indent=2))
        return
    table = [("code", "name", "severity", "default", "fixable")]
    table += [(r["code"], r["name"], r["severity"], "on" if r["default"] else "off", r["fixable"] or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="trainlint")
    except SystemExit as exc:
        if argv is None:  # the console script or `python -m trainlint`, not a caller's `main([...])`
            _fast_exit(exc.code)
        raise
    except Exception as exc:  # click handles its own errors; anything else is ours
        if os.environ.get("TRAINLINT_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc}")
        sys.exit(EXIT_ERROR)


def _fast_exit(code) -> None:
    """Flush and leave without tearing the interpreter down.

    Freeing libcst's and the rules' module objects at exit costs ~30 ms, a tenth of a
    one-file (pre-commit) run. Nothing is left to clean up by then: the worker pool is
    closed, cache entries are written with renames, output is flushed here.
    """
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        # The reader went away (`trainlint . | head`): let Python's usual exit deal with it.
        return
    os._exit(code)
