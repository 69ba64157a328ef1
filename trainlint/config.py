"""`[tool.trainlint]` in pyproject.toml: where it is found, what it may say, how the CLI overrides it.

One configuration applies to a run: the `[tool.trainlint]` table of the first
pyproject.toml found upwards from the linted paths (their common folder), or the
file given with `--config`. Paths inside it (exclude globs, per-file-ignores,
cache-dir) are relative to the folder holding that file, the *project root*;
without a configuration the project root is the current directory.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

OUTPUT_FORMATS = ("text", "json", "sarif", "github")
DEFAULT_CACHE_DIR = ".trainlint_cache"


class ConfigError(Exception):
    """Bad configuration or options: reported as one line on stderr, exit code 2."""


# Keys of [tool.trainlint] and the kind of value each takes. Same names as the CLI options.
_KEYS = {
    "select": "codes",
    "ignore": "codes",
    "extend-select": "codes",
    "per-file-ignores": "table",
    "exclude": "globs",
    "extend-exclude": "globs",
    "force-exclude": "bool",
    "respect-gitignore": "bool",
    "output-format": "format",
    "show-source": "bool",
    "fix": "bool",
    "unsafe-fixes": "bool",
    "cache-dir": "str",
    "jobs": "int",
}


@dataclass
class FileConfig:
    """What a configuration file says, checked for shape (codes are checked in `resolve`)."""

    path: Optional[Path] = None  # the file read; None: no configuration found
    root: Path = field(default_factory=Path.cwd)
    values: Dict[str, object] = field(default_factory=dict)

    def get(self, key: str, default=None):
        return self.values.get(key, default)


def split_codes(raw: Iterable[str]) -> List[str]:
    """`("TL1,TL2", "TL301 TL4")` -> `["TL1", "TL2", "TL301", "TL4"]`."""
    out: List[str] = []
    for item in raw:
        out.extend(c for c in re.split(r"[\s,]+", item.strip()) if c)
    return out


def parse_per_file_ignores(raw: Iterable[str]) -> Dict[str, List[str]]:
    """Parse CLI `glob:CODES` pairs, separated by commas or spaces (flake8/ruff style).

    `"tests/*:TL101,TL2 scripts/x.py:TL4"` -> `{"tests/*": ["TL101", "TL2"], "scripts/x.py": ["TL4"]}`:
    a token with a colon starts a pair, a token without one adds a code to the pair before it.
    """
    table: Dict[str, List[str]] = {}
    current: Optional[str] = None
    for item in raw:
        for token in re.split(r"[\s,]+", item.strip()):
            if not token:
                continue
            if ":" in token:
                glob, _, code = token.rpartition(":")
                if not glob:
                    raise ConfigError(f"--per-file-ignores: missing file pattern in {token!r}")
                current = glob
                table.setdefault(glob, [])
                if code:
                    table[glob].append(code)
            elif current is None:
                raise ConfigError(f"--per-file-ignores: expected 'pattern:CODES', got {token!r}")
            else:
                table[current].append(token)
    for glob, codes in table.items():
        if not codes:
            raise ConfigError(f"--per-file-ignores: no codes given for {glob!r}")
    return table


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on old Pythons only
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from None


def _as_str_list(key: str, value, where: str) -> List[str]:
    # A bare string is refused, not split: `select = "TL1"` is the README's list written
    # wrong, and ruff refuses it too; guessing would hide the mistake in other keys.
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return split_codes(value) if _KEYS[key] == "codes" else list(value)
    example = f'["{value}"]' if isinstance(value, str) else '["..."]'
    raise ConfigError(f"{where}: '{key}' must be a list of strings, e.g. {key} = {example}")


def _pfi_codes(glob: str, codes, where: str) -> List[str]:
    if isinstance(codes, list) and all(isinstance(c, str) for c in codes):
        return split_codes(codes)
    example = f'["{codes}"]' if isinstance(codes, str) else '["TL101"]'
    raise ConfigError(f"{where}: per-file-ignores '{glob}' must be a list of codes, e.g. \"{glob}\" = {example}")


def _check(table: dict, where: str) -> Dict[str, object]:
    """Validate the shape of a [tool.trainlint] table; keys may use '-' or '_'."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [tool.trainlint] must be a table")
    values: Dict[str, object] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("_", "-")
        kind = _KEYS.get(key)
        if kind is None:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"{where}: unknown key '{raw_key}' in [tool.trainlint] (known: {known})")
        if kind in ("codes", "globs"):
            values[key] = _as_str_list(key, value, where)
        elif kind == "table":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: 'per-file-ignores' must be a table of pattern = [codes]")
            values[key] = {str(g): _pfi_codes(g, codes, where) for g, codes in value.items()}
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: '{raw_key}' must be true or false")
            values[key] = value
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{where}: '{raw_key}' must be a non-negative integer")
            values[key] = value
        elif kind == "format":
            if value not in OUTPUT_FORMATS:
                raise ConfigError(f"{where}: 'output-format' must be one of {', '.join(OUTPUT_FORMATS)}")
            values[key] = value
        else:  # str
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: '{raw_key}' must be a non-empty string")
            values[key] = value
    return values


def load_config_file(path: Path) -> FileConfig:
    """`--config FILE`: a pyproject.toml's [tool.trainlint], or a TOML file of those keys at top level."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = _load_toml(path)
    tool = data.get("tool")
    if isinstance(tool, dict) and "trainlint" in tool:
        table = tool["trainlint"]
    elif path.name == "pyproject.toml":
        table = {}
    else:
        table = data
    # Absolute but not symlink-resolved: file paths are compared with it as the user gave them.
    absolute = Path(os.path.abspath(path))
    return FileConfig(path=absolute, root=absolute.parent, values=_check(table, str(path)))


def find_config(paths: Sequence[str], cwd: Optional[Path] = None) -> FileConfig:
    """The first pyproject.toml with a [tool.trainlint] table, upwards from the paths' common folder."""
    cwd = Path(cwd or os.getcwd())
    starts = []
    for p in paths:
        ap = Path(os.path.normpath(cwd / p)) if p != "-" else cwd
        starts.append(str(ap if ap.is_dir() else ap.parent))
    try:
        start = Path(os.path.commonpath(starts)) if starts else cwd
    except ValueError:  # different drives (Windows)
        start = cwd
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            data = _load_toml(candidate)
            tool = data.get("tool")
            if isinstance(tool, dict) and "trainlint" in tool:
                return FileConfig(path=candidate, root=folder, values=_check(tool["trainlint"], str(candidate)))
    return FileConfig(path=None, root=cwd, values={})


@dataclass
class CliOptions:
    """The `check` options that can also come from the configuration (None: not given)."""

    select: Optional[List[str]] = None
    ignore: List[str] = field(default_factory=list)
    extend_select: List[str] = field(default_factory=list)
    per_file_ignores: Optional[Dict[str, List[str]]] = None
    exclude: Optional[List[str]] = None
    force_exclude: Optional[bool] = None
    respect_gitignore: Optional[bool] = None
    output_format: Optional[str] = None
    show_source: Optional[bool] = None
    fix: Optional[bool] = None
    unsafe_fixes: Optional[bool] = None
    cache_dir: Optional[str] = None
    jobs: Optional[int] = None


@dataclass
class Settings:
    """Everything a run needs, configuration and CLI merged."""

    root: Path
    config_path: Optional[Path]
    selected: FrozenSet[str]
    per_file_ignores: List[Tuple[object, FrozenSet[str]]]  # (GitIgnoreSpec, codes)
    exclude: List[str]
    force_exclude: bool
    respect_gitignore: bool
    output_format: str
    show_source: bool
    fix: bool
    unsafe_fixes: bool
    cache_dir: Path
    jobs: int

    def selected_for(self, rel_path: str) -> FrozenSet[str]:
        """The codes selected for one file: per-file-ignores taken away."""
        chosen = self.selected
        for spec, codes in self.per_file_ignores:
            if spec.match_file(rel_path):
                chosen = chosen - codes
        return chosen


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _expand(codes: Iterable[str], where: str) -> List[str]:
    from trainlint.registry import UnknownCodeError, expand

    try:
        return expand(codes)
    except UnknownCodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def resolve(config: FileConfig, cli: CliOptions) -> Settings:
    """Merge: the configuration chooses first, then the CLI.

    Selection works in two layers: the configuration's select/extend-select/ignore
    give a set; then `--select` replaces that set, `--extend-select` adds to it and
    `--ignore` takes from it. Other options simply override the configuration.
    """
    from trainlint.registry import rule_codes

    where = str(config.path) if config.path else "configuration"
    cfg_select = config.get("select")
    chosen = set(_expand(cfg_select, where)) if cfg_select is not None else set(rule_codes())
    chosen |= set(_expand(config.get("extend-select", []), where))
    chosen -= set(_expand(config.get("ignore", []), where))
    if cli.select is not None:
        chosen = set(_expand(cli.select, "--select"))
    chosen |= set(_expand(cli.extend_select, "--extend-select"))
    chosen -= set(_expand(cli.ignore, "--ignore"))

    pfi_raw = cli.per_file_ignores if cli.per_file_ignores is not None else config.get("per-file-ignores", {})
    pfi_where = "--per-file-ignores" if cli.per_file_ignores is not None else where
    per_file: List[Tuple[object, FrozenSet[str]]] = []
    if pfi_raw:
        import pathspec

        for glob, codes in pfi_raw.items():
            per_file.append((pathspec.GitIgnoreSpec.from_lines([glob]), frozenset(_expand(codes, pfi_where))))

    exclude = list(cli.exclude if cli.exclude is not None else config.get("exclude", []))
    exclude += list(config.get("extend-exclude", []))

    cache_dir_raw = cli.cache_dir or config.get("cache-dir")
    if cli.cache_dir:
        cache_dir = Path(os.path.abspath(cli.cache_dir))
    elif cache_dir_raw:
        cache_dir = Path(os.path.normpath(config.root / str(cache_dir_raw)))
    else:
        cache_dir = config.root / DEFAULT_CACHE_DIR

    jobs = cli.jobs if cli.jobs is not None else config.get("jobs")
    return Settings(
        root=config.root,
        config_path=config.path,
        selected=frozenset(chosen),
        per_file_ignores=per_file,
        exclude=exclude,
        force_exclude=bool(cli.force_exclude if cli.force_exclude is not None else config.get("force-exclude", False)),
        respect_gitignore=bool(
            cli.respect_gitignore if cli.respect_gitignore is not None else config.get("respect-gitignore", True)
        ),
        output_format=cli.output_format or str(config.get("output-format", "text")),
        # On by default, as ruff's `full` output: a finding is read faster beside its code.
        show_source=bool(cli.show_source if cli.show_source is not None else config.get("show-source", True)),
        fix=bool(cli.fix if cli.fix is not None else config.get("fix", False)),
        unsafe_fixes=bool(cli.unsafe_fixes if cli.unsafe_fixes is not None else config.get("unsafe-fixes", False)),
        cache_dir=cache_dir,
        jobs=int(jobs) if jobs else default_jobs(),
    )
