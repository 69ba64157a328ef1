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

    def format_help(self, ctx, formatter):
        # `trainlint --help` shows check's options too: `trainlint PATH` is how most run it.
        super().format_help(ctx, formatter)
        check_cmd = self.commands.get("check")
        if check_cmd is None:
            return
        sub = click.Context(check_cmd, info_name="check", parent=ctx)
        options = [p for p in check_cmd.get_params(sub) if isinstance(p, click.Option) and p.name != "help"]
        records = [r for r in (p.get_help_record(sub) for p in options) if r]
        with formatter.section("Options of check (trainlint [check] [OPTIONS] [PATHS]...)"):
            formatter.write_dl(records)


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
@click.option("--show-source/--no-show-source", default=None, help="Text output: show the source line, with carets, under each finding (default: yes, as ruff's full output).")
@click.option("--output-file", "-o", metavar="FILE", help="Write the report (or --diff) to this file instead of standard output.")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True, help="Colour the text output: auto colours on a terminal unless NO_COLOR is set (FORCE_COLOR forces it).")
@click.option("--fix/--no-fix", default=None, help="Apply safe fixes, report what is left.")
@click.option("--unsafe-fixes/--no-unsafe-fixes", default=None, help="With --fix or --diff: apply unsafe fixes too.")
@click.option("--diff", is_flag=True, help="Print the fixes as a unified diff, write nothing (exit 1 if there are any).")
@click.option("--add-noqa", is_flag=True, help="Write `# noqa: CODE` on each line with findings (adopting the linter on old code); report nothing.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when there are findings.")
@click.option("--statistics", is_flag=True, help="Print counts per rule instead of the findings.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Cache folder (default: .trainlint_cache beside the configuration).")
@click.option("--jobs", "-j", type=click.IntRange(min=0), help="Files linted in parallel (default, and 0: all cores).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Use this pyproject.toml (or TOML file of [tool.trainlint] keys).")
@click.option("--force-exclude/--no-force-exclude", default=None, help="Apply excludes to paths given by name too (for pre-commit).")
@click.option("--respect-gitignore/--no-respect-gitignore", default=None, help="Skip what .gitignore files ignore when walking folders (default: yes).")
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
        respect_gitignore=opts["respect_gitignore"],
        output_format=opts["output_format"],
        show_source=opts["show_source"],
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


def _use_color(choice: str, stream) -> bool:
    """`--color`: always/never as said; auto colours a terminal unless NO_COLOR is set.

    NO_COLOR (no-color.org) and FORCE_COLOR count when set to a non-empty value; an
    explicit `--color always/never` wins over both.
    """
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if stream is None or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Output:
    """Where the report (or the diff) goes: a stream, or `--output-file`, written at the end."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self.parts: List[str] = []

    def stream(self, err: bool):
        """The stream written to (None for the file): decides `--color auto`."""
        if self.path:
            return None
        return sys.stderr if err else sys.stdout

    def write(self, text: str, err: bool = False, color: bool = False) -> None:
        if self.path:
            self.parts.append(text)
        elif text:
            click.echo(text, nl=False, err=err, color=color)

    def close(self) -> bool:
        """Write the file; False (after saying why) when it cannot be written."""
        if not self.path:
            return True
        try:
            target = Path(self.path)
            if target.parent != Path(""):
                target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("".join(self.parts), encoding="utf-8")
        except OSError as exc:
            _error(f"{self.path}: cannot write the output file: {exc.strerror or exc}")
            return False
        return True


def _report(findings, settings, opts, fixed: int, fix_mode, output: "_Output", err: bool = False, contents=None) -> None:
    from trainlint.report import Summary, render

    color = settings.output_format == "text" and _use_color(opts["color"], output.stream(err))
    sources = None
    if settings.output_format == "text" and settings.show_source and findings and not opts["statistics"]:
        from trainlint.report.source import SourceLines

        sources = SourceLines(contents)
    summary = Summary(
        fixed=fixed,
        fix_mode=bool(fix_mode),
        unsafe_fixes=settings.unsafe_fixes,
        statistics=opts["statistics"],
        quiet=opts["quiet"],
        root=Path.cwd(),
        show_source=settings.show_source,
        sources=sources,
        color=color,
    )
    output.write(render(settings.output_format, findings, summary), err=err, color=color)
    if settings.output_format != "text" and fixed and not opts["quiet"]:
        click.echo(f"Fixed {fixed} finding{'s' if fixed != 1 else ''}.", err=True)


def _exit_code(has_findings: bool, opts: dict, errors: bool) -> int:
    if errors:
        return EXIT_ERROR
    if has_findings and not opts["exit_zero"]:
        return EXIT_FINDINGS
    return EXIT_OK


def _check_usage(opts: dict) -> None:
    """Option combinations that cannot mean anything: a one-line error (exit 2), never a guess."""
    if opts["fix"] and opts["diff"]:
        raise ConfigError("--fix and --diff cannot be used together (--diff shows the fixes without writing them)")
    if opts["stdin_filename"] and opts["paths"] and "-" not in opts["paths"]:
        raise ConfigError("--stdin-filename names the code read from standard input: give '-' as the path (or no path)")
    if opts["add_noqa"] and (opts["fix"] or opts["diff"]):
        raise ConfigError(f"--add-noqa cannot be used with {'--fix' if opts['fix'] else '--diff'}")
    if opts["add_noqa"] and ("-" in opts["paths"] or (opts["stdin_filename"] and not opts["paths"])):
        raise ConfigError("--add-noqa writes files: it cannot read standard input")
    if opts["output_file"] and os.path.isdir(opts["output_file"]):
        raise ConfigError(f"--output-file: {opts['output_file']} is a folder")


def _run_check(**opts) -> int:
    _check_usage(opts)
    output = _Output(opts["output_file"])
    code = _lint_paths(opts, output)
    if not output.close():
        return EXIT_ERROR
    return code


def _lint_paths(opts: dict, output: "_Output") -> int:
    paths = list(opts["paths"])
    if not paths:
        paths = ["-"] if opts["stdin_filename"] else ["."]
    if "-" in paths and len(paths) > 1:
        raise ConfigError("'-' (standard input) cannot be combined with other paths")
    use_stdin = paths == ["-"]
    config_paths = [opts["stdin_filename"] or "."] if use_stdin else paths
    settings = _settings(opts, config_paths)
    fix_mode = None if opts["add_noqa"] else _fix_mode(settings, opts["diff"])
    from trainlint import torch_requirement

    torch_requirement.clear_cache()  # metadata is read afresh on every run (an in-process caller may edit it)
    if use_stdin:
        return _run_stdin(settings, opts, fix_mode, output)

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
    for e in found.errors:
        _error(e)
        errors = True
    if not found.files and not errors:
        errors = _nothing_to_lint(found, settings, explicit=bool(opts["paths"]), quiet=opts["quiet"])

    cache = None
    if not opts["no_cache"]:
        from trainlint.cache import Cache

        cache = Cache(settings.cache_dir)
    with _progress(len(found.files), opts) as progress:
        outcomes = lint_files(found.files, settings, cache, fix_mode, progress)

    if opts["add_noqa"]:
        if cache is not None:
            cache.prune()
        return _exit_code(False, opts, _add_noqa(outcomes, opts) or errors)

    fixed = 0
    diffs: List[str] = []
    unwritten = {}  # report path -> fixed content that could not be written (the findings' text)
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
            unwritten[out.display] = out.new_content
            continue
        cache_written(cache, out)
    if cache is not None:
        cache.prune()

    if opts["diff"]:
        output.write("".join(diffs))
        if not opts["quiet"]:
            n = sum(o.fixed for o in outcomes if o.new_content is not None)
            click.echo(f"Would fix {n} finding{'s' if n != 1 else ''}." if n else "No fixes available.", err=True)
        return _exit_code(bool(diffs), opts, errors)

    findings = sorted((f for o in outcomes for f in o.findings), key=Finding.sort_key)
    if outcomes or settings.output_format != "text" or not errors:
        _report(findings, settings, opts, fixed, fix_mode, output, contents=unwritten)
    return _exit_code(bool(findings), opts, errors)


def _add_noqa(outcomes, opts) -> bool:
    """`--add-noqa`: write the directives, say how many; True if a file could not be written."""
    from trainlint.noqa import add_to_notebook, add_to_python
    from trainlint.runner import write_atomic

    failed = False
    added = files = 0
    for out in outcomes:
        if out.error:
            _error(f"{out.display}: internal error: {out.error}")
            failed = True
            continue
        if not out.findings or out.path is None:
            continue
        try:
            content = out.path.read_bytes()
            add = add_to_notebook if out.kind == "notebook" else add_to_python
            new, n = add(content, out.findings)
            if new is None:
                continue
            write_atomic(out.path, new)
        except OSError as exc:
            _error(f"{out.display}: cannot add noqa directives: {exc.strerror or exc}")
            failed = True
            continue
        except ValueError as exc:  # a notebook whose cells cannot be written back
            _warn(f"{out.display}: noqa directives not added: {exc}")
            continue
        added, files = added + n, files + 1
    if not opts["quiet"]:
        where = f" to {_count(files, 'file')}" if files else ""
        click.echo(f"Added {_count(added, 'noqa directive')}{where}.", err=True)
    return failed


# A progress bar is worth its noise only on runs that take a while.
PROGRESS_MIN_FILES = 100


def _progress(total: int, opts: dict):
    """A progress bar on stderr (click's, already a dependency) for big runs on a terminal.

    Yields a callback `done(n)`: n files finished so far. Never on a pipe or a CI log,
    never with --quiet; the report itself is not written until the bar is finished.
    """
    import contextlib

    stderr = sys.stderr
    try:
        on_terminal = stderr.isatty()
    except (AttributeError, ValueError):
        on_terminal = False
    if total < PROGRESS_MIN_FILES or opts["quiet"] or not on_terminal:
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def bar():
        with click.progressbar(length=total, label="Linting", file=stderr, show_pos=True, show_eta=True,
                               color=_use_color(opts["color"], stderr)) as pb:
            def done(n: int) -> None:
                if n > pb.pos:
                    pb.update(n - pb.pos)

            yield done
            done(total)

    return bar()


def _nothing_to_lint(found, settings, explicit: bool, quiet: bool) -> bool:
    """Say why a run found no file to lint; True when that is an error (exit 2).

    Paths named on the command line that hold nothing to lint are a mistake (a typo, a
    folder a .gitignore hides): never pass on nothing. Excluded by `--force-exclude`
    (pre-commit naming only excluded files) or the implicit `.` stays a warning, as in ruff.
    """
    skipped = found.skipped
    reasons = []
    if skipped["force-exclude"]:
        reasons.append(f"{_count(skipped['force-exclude'], 'path')} given excluded by the exclude patterns (--force-exclude)")
    if skipped["exclude"]:
        reasons.append(f"{_count(skipped['exclude'], 'file or folder', 'files or folders')} skipped by the exclude patterns")
    if skipped["gitignore"]:
        reasons.append(
            f"{_count(skipped['gitignore'], 'file or folder', 'files or folders')} skipped by .gitignore "
            "(--no-respect-gitignore lints them)"
        )
    why = "; ".join(reasons) if reasons else "no .py or .ipynb files there"
    msg = f"no Python files or notebooks found under the given paths: {why}"
    if explicit and not (settings.force_exclude and skipped["force-exclude"]):
        _error(msg)
        return True
    if not quiet:
        _warn(msg)
    return False


def _count(n: int, one: str, many: Optional[str] = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _run_stdin(settings, opts, fix_mode: Optional[str], output: "_Output") -> int:
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
        output.write("".join(_unified_diff(label, old, new) for label, old, new in out.changes))
        return _exit_code(out.new_content is not None, opts, False)
    if fix_mode:
        # Like ruff: the fixed source goes to stdout, the report to stderr.
        fixed_content = out.new_content if out.new_content is not None else content
        stdout.write(fixed_content)
        stdout.flush()
        _report(out.findings, settings, opts, out.fixed, fix_mode, output, err=True, contents={display: fixed_content})
    else:
        _report(out.findings, settings, opts, 0, fix_mode, output, contents={display: content})
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
    doc = rule_doc(rule)
    fixable = rule.fixable or "no"
    if rule.fixable and "\n## Fix\n" in f"\n{doc}\n":
        fixable += " (when: see *Fix* below)"
    click.echo(f"{rule.code} {rule.name}\n\nSeverity: {rule.severity}. Fixable: {fixable}. On by default: yes.\n")
    click.echo(doc or "(no documentation)")


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
        # The console script or `python -m trainlint` (not a caller's `main([...])`), run
        # as the program itself: nothing is left to do after us.
        if argv is None and _nothing_pending(sys._getframe(1)):
            _fast_exit(exc.code)
        raise
    except Exception as exc:  # click handles its own errors; anything else is ours
        if os.environ.get("TRAINLINT_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc}")
        sys.exit(EXIT_ERROR)


def _nothing_pending(caller) -> bool:
    """Whether the process may end right here, with no one waiting for `main` to return.

    Not so under a profiler or tracer (`python -m cProfile -o out.prof -m trainlint`,
    coverage, a debugger: each writes its results after the program returns), when `main`
    was called by some other code (only the console script's or `python -m`'s module-level
    code, started by runpy, may sit above it), or while another non-daemon thread runs.
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return False
    monitoring = getattr(sys, "monitoring", None)  # Python 3.12+: cProfile and coverage use it
    if monitoring is not None and any(monitoring.get_tool(i) is not None for i in range(6)):
        return False
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return False
    frame = caller
    if frame is None or frame.f_code.co_name != "<module>":
        return False
    frame = frame.f_back
    while frame is not None:
        # By module name: runpy's code is frozen into the interpreter (co_filename "<frozen runpy>").
        if frame.f_globals.get("__name__") != "runpy":
            return False
        frame = frame.f_back
    return True


def _fast_exit(code) -> None:
    """Run the exit handlers, flush and leave without tearing the interpreter down.

    Freeing libcst's and the rules' module objects at exit costs ~30 ms, a tenth of a
    one-file (pre-commit) run. Only called when nothing waits for the program to return
    (`_nothing_pending`); the worker pool is closed by then, cache entries are written
    with renames, and atexit handlers (anyone's: a sitecustomize's, logging's) run here.
    """
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    import atexit

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is None:  # not CPython: exit the ordinary way
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        # The reader went away (`trainlint . | head`): let Python's usual exit deal with it.
        sys.exit(code)
    run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)
