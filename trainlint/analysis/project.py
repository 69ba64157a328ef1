"""Project-wide facts: what other modules of the linted project define, read from disk.

A rule that meets `Net()` imported with `from .models import Net` asks `ctx.project` for
the class: the import is resolved the way Python would find the module (relative imports
from the file's package; absolute ones from the file's folder, the top of its package,
the linted root and its `src/`), the module is read and parsed -- never imported -- and
reduced to a small summary (`summarise`):
- classes: what `forward` returns (softmax / sigmoid output, see analysis/values.py; for a
  tuple, element by element) and
  whether the class holds a layer that behaves differently in train and eval mode;
- module-level functions: whether calling one trains, clears gradients, runs under
  no_grad, which mode it leaves a model in, and the classes a factory returns;
- its calls of imported evaluation-named functions, with the mode and no_grad state at
  the call (for an `evaluate()` whose callers live in other modules, `external_callers`).
Re-exports (`from .net import Net` in a package's `__init__.py`), star imports and
factories are followed, MAX_HOPS in all.

Summaries are plain dicts (str/bool/None/lists), cached per file content in the lint
cache, so a one-file pre-commit run reads the other modules' summaries instead of parsing
them. Every file a lint result depended on (read, or looked for and absent) is recorded
with its content hash (`ProjectView.deps`), and a scan of the whole project for callers
as one hash of all its files; the cache serves that result again only while they are
unchanged (`deps_unchanged`).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from trainlint import precheck

if TYPE_CHECKING:  # pragma: no cover
    from trainlint.analysis.context import FileContext
    from trainlint.cache import Cache

SUMMARY_VERSION = 5  # 2: flag-gated activations, dataset classes' own ordering; 3: tuple elements, loss classes; 4: forward's output kind; 5: functions passed as models, helper calls modes cannot reach
MAX_HOPS = 3  # re-exports, star imports and factories followed, in all
MAX_MODULE_BYTES = 2_000_000  # a generated or data module: not worth parsing for facts
# Roots that are never a project module: PyTorch and its family (see precheck.TORCH_ROOTS),
# and the standard library names a project module would shadow only by accident.
_EXTERNAL_ROOTS = frozenset(precheck.TORCH_ROOTS) | frozenset({
    "numpy", "np", "os", "sys", "math", "random", "json", "re", "time", "typing", "collections",
    "functools", "itertools", "pathlib", "argparse", "logging", "dataclasses", "abc", "copy",
})


_ALT_CONSTRUCTOR = re.compile(r"^(from_\w+|load\w*|build\w*|create\w*)$")


def _member(module: str, name: str) -> str:
    """`models` + `Net` -> `models.Net`; `.` (`from . import *`) + `Net` -> `.Net`."""
    return module + name if module.endswith(".") else f"{module}.{name}"


def _is_under(path: Path, folder: Path) -> bool:
    from trainlint.discovery import rel_to

    # the root is resolved, the path may not be
    return any(rel_to(p, folder) is not None for p in (path, Path(os.path.realpath(path))))


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def summarise(ctx: "FileContext") -> dict:
    """The facts other modules may ask about this one (JSON-able: str keys, str/bool/None)."""
    from trainlint.analysis.datasets import is_iterable_dataset_class, shuffles_itself
    from trainlint.analysis.flags import bool_defaults
    from trainlint.analysis.evaluation import Evaluation
    from trainlint.analysis.losses import LOSS_FAMILIES, feeds_loss_input
    from trainlint.analysis.values import SIGMOID, SOFTMAX, _returns_output, returned_elements

    ev = Evaluation(ctx)
    classes: Dict[str, dict] = {}
    for name, cls in ctx.facts.classes.items():
        if cls.function is not None:
            continue  # a class defined inside a function cannot be imported
        entry: dict = {}
        forward = ctx.method(cls, "forward")
        for kind in (SOFTMAX, SIGMOID):
            why = None
            if forward is not None:
                try:
                    # As called with no flag arguments: `model(x)` in another module.
                    why = _returns_output(ctx, forward, kind, 0, (forward, bool_defaults(forward)))
                except RecursionError:
                    why = None
            entry[kind.label] = why
            # `return logits, probs`: which elements are the output, for `a, b = model(x)`.
            elements = None
            if forward is not None:
                try:
                    elements = returned_elements(ctx, forward, kind, (forward, bool_defaults(forward)))
                except RecursionError:
                    elements = None
            if elements and any(elements):
                entry[f"{kind.label}_elements"] = elements
        # A loss class that hands its input to cross-entropy / a with-logits BCE (TL201/TL202).
        feeds = [f for f, (funcs, mods) in LOSS_FAMILIES.items() if forward is not None and feeds_loss_input(ctx, forward, funcs, mods)]
        if feeds:
            entry["feeds"] = feeds
        # What `forward` ends in as the outputs analysis reads it (TL205-TL208): logits, a
        # log_softmax, a ReLU, ... with its reason; None when not one kind on every path.
        entry["output"] = _output_entry(ctx, forward, of_factory=False)
        # A dataset class: whether its loader's order is its own business (TL401).
        entry["iterable_dataset"] = is_iterable_dataset_class(ctx, cls)
        entry["shuffles_itself"] = shuffles_itself(ctx, cls)
        try:
            entry["mode_layers"] = bool(ev._class_has_mode_layers(cls, set()))
        except RecursionError:
            entry["mode_layers"] = True  # cannot tell: as if it had them
        entry["module"] = bool(ctx.training.is_module_class(cls))
        classes[name] = entry
    functions: Dict[str, dict] = {}
    for fn in ctx.facts.functions:
        if fn.cls is None and fn.parent is None:
            entry = _function_facts(ctx, fn)
            made = _returned_classes(ctx, fn)
            if made:
                entry["returns"] = made
            # a factory of torch.nn layers (`return nn.Sequential(..., nn.Linear(h, 1))`):
            # what its model ends in (TL205-TL208)
            entry["output"] = _output_entry(ctx, fn, of_factory=True)
            functions[fn.name] = entry
    # The imports, for `__init__.py` re-exports (`from .net import Net`, `from .vgg import *`).
    return {
        "v": SUMMARY_VERSION,
        "classes": classes,
        "functions": functions,
        "imports": dict(ctx.imports.alias),
        "stars": list(ctx.imports.star),
        "calls": _evaluation_calls(ctx, ev),
        "torch": bool(ctx.uses_torch),
    }


def _output_entry(ctx: "FileContext", fn, of_factory: bool) -> Optional[List[str]]:
    """[kind, why] of what a class's `forward` returns or a factory builds (outputs analysis)."""
    from trainlint.analysis.outputs import factory_output, forward_output

    if fn is None:
        return None
    try:
        out = factory_output(ctx, fn) if of_factory else forward_output(ctx, fn)
    except RecursionError:
        return None
    return [out.kind, out.why] if out is not None else None


def _evaluation_calls(ctx: "FileContext", ev) -> List[dict]:
    """This module's calls of imported evaluation-named functions (`utils.evaluate(...)`),
    with the state at the call: the model's mode (True eval, False train, None unknown),
    gradients off, and whether the call feeds a backward (an `infer()` used for training).
    What TL301/TL302 ask of an `evaluate()` whose callers live in other modules."""
    from trainlint.analysis.evaluation import EVAL_FUNCTION_NAME

    out: List[dict] = []
    tr = ctx.training
    for c in ctx.facts.calls:
        q = c.qualname
        if q is None or not EVAL_FUNCTION_NAME.search(q.rsplit(".", 1)[-1]):
            continue
        if not q.startswith(".") and q.split(".", 1)[0] in _EXTERNAL_ROOTS:
            continue
        try:
            mode = True if tr.under_mode_context(c) else ev._mode_before(c.function, c.order, 0)
            no_grad = bool(
                tr.under_no_grad(c) or ev._grad_disabled_before(c.function, c.order)
                or (c.function is not None and ev._callers_no_grad(c.function, 0))
            )
            trains = not tr.under_no_grad(c) and ev._feeds_backward(c)
        except RecursionError:
            mode, no_grad, trains = None, True, False  # cannot tell: as the quietest caller
        out.append({
            "q": q, "mode": mode, "no_grad": no_grad, "trains": bool(trains), "star": c.has_star_args,
            "args": [_passed_model(ctx, ev, a.value, c) for a in c.node.args if a.keyword is None and not a.star],
            "kw": {a.keyword.value: _passed_model(ctx, ev, a.value, c) for a in c.node.args if a.keyword is not None},
        })
    return out


def _passed_model(ctx: "FileContext", ev, expr, at) -> Optional[List[list]]:
    """What a caller passes to an `evaluate()` of another module, one entry per value it may
    hold: `["local", is_module, has_mode_layers]` when this module decides it (a class of
    its own, a torch.nn construction, a model zoo's), `["class", qualname]` for an imported
    class the callee's lint looks up in the project (`ProjectView._passed_state`: a summary
    is this module's facts alone), `["function"]` for a plain function or lambda (no modes,
    analysis/callables.py). None: not a construction that can be followed."""
    import libcst as cst

    from trainlint.analysis.callables import plain_function

    out: List[list] = []
    try:
        for value, site in ctx.constructions(expr, at):
            if plain_function(ctx, value, site):
                if ["function"] not in out:
                    out.append(["function"])
                continue
            if not isinstance(value, cst.Call):
                return None
            cls = ctx.class_named(value.func.value) if isinstance(value.func, cst.Name) else None
            if cls is not None:
                entry = ["local", bool(ctx.training.is_module_class(cls)), bool(ev._class_has_mode_layers(cls, set()))]
            else:
                q = ctx.qualname(value.func)
                if q is None or (q.startswith("torch.") and not q.startswith("torch.nn.")):
                    return None  # `torch.load(path)`, a local factory: not followed
                if q.startswith(".") or q.split(".", 1)[0] not in precheck.TORCH_ROOTS:
                    entry = ["class", q]
                elif any(isinstance(n, cst.Call) and not (ctx.qualname(n.func) or "").startswith("torch.") for n in _inner_calls(value)):
                    return None  # `nn.Sequential(Block(), ...)`: a layer this module cannot see into
                else:
                    entry = ["local", True, bool(ev._construction_has_mode_layers(value, set()))]
            if entry not in out:
                out.append(entry)
    except RecursionError:
        return None
    return out or None


def _inner_calls(call):
    from trainlint.analysis.facts import walk

    for a in call.args:
        yield from walk(a.value)


def passed_models(ev, fn, expr, at, through_callers: bool = False) -> Optional[List[Optional[dict]]]:
    """What the callers in other modules pass for the model `expr` of the module-level
    function `fn`, when `expr` is one of its parameters and only such callers exist (one
    state per caller, see `ProjectView._passed_state`; None for an argument not passed or
    not followed); None when the model is not a parameter or there are no such callers.
    With `through_callers`, `fn`'s same-module callers may hand the model on from a
    parameter of their own (`train_and_predict(rnn, ...)` calling `predict(..., rnn, ...)`):
    then the callers in other modules of the function that parameter belongs to count."""
    import libcst as cst

    ctx = ev.ctx
    if fn is None or (not through_callers and (fn.cls is not None or fn.parent is not None or ctx.callers(fn))):
        return None
    try:
        cands = ctx.constructions(expr, at)
    except RecursionError:
        return None
    if len(cands) != 1 or not isinstance(cands[0][0], cst.Name):
        return None
    value, site = cands[0]
    if site.function is not fn:
        if not through_callers:
            return None
        fn = site.function
    if fn is None or fn.cls is not None or fn.parent is not None or ctx.callers(fn):
        return None
    name = value.value
    if name not in fn.params:
        return None
    external = ev._external_callers(fn)
    if not external:
        return None
    index = fn.params.index(name)
    out: List[Optional[dict]] = []
    for call in external:
        if name in call.get("kw", {}):
            out.append(call["kw"][name])
        elif not call.get("star") and index < len(call.get("args", [])):
            out.append(call["args"][index])
        else:
            out.append(None)
    return out


def _function_facts(ctx: "FileContext", fn) -> dict:
    """What calling a module-level function does, as its body (same-module calls expanded)
    shows: `trains` (a backward or an optimizer step), `zero_grad`, `mode` (the mode it
    leaves a model in: "eval", "train", "mode" for one it cannot read or that depends on a
    condition, None when it sets none) and `no_grad` (decorated with no_grad/inference_mode)."""
    from trainlint.analysis.training import BACKWARD, EVAL, MODE, STEP, TRAIN, ZERO_GRAD

    tr = ctx.training
    if not _may_have_events(ctx):
        return {"trains": False, "zero_grad": False, "mode": None, "no_grad": tr.function_is_no_grad(fn)}
    try:
        events = tr.function_events(fn)
    except RecursionError:
        return {"trains": None, "zero_grad": None, "mode": "mode", "no_grad": False}
    kinds = {e.kind for e in events}
    modes = [e for e in events if e.kind in (EVAL, TRAIN, MODE)]
    mode = None
    if modes:
        last = modes[-1]
        conditional = bool(last.site.ifs or last.site.loops or any(c.ifs or c.loops for c in last.chain))
        mode = "mode" if last.kind == MODE or conditional else ("eval" if last.kind == EVAL else "train")
    return {
        "trains": bool(kinds & {BACKWARD, STEP}),
        "zero_grad": ZERO_GRAD in kinds,
        "mode": mode,
        "no_grad": tr.function_is_no_grad(fn),
    }


_EVENT_ATTRS = frozenset({"backward", "step", "eval", "train", "zero_", "fill_", "mul_", "detach_", "requires_grad_"})


def _may_have_events(ctx: "FileContext") -> bool:
    """Some call or assignment in the module could be a backward, a step, a gradient clear
    or a mode switch (a superset of what analysis/training.py classifies): a module of
    helpers with none of them (plots, metrics, datasets) needs no event streams at all."""
    cached = ctx.__dict__.get("_project_may_have_events")
    if cached is None:
        cached = any(
            c.attr is not None and (c.attr in _EVENT_ATTRS or "grad" in c.attr) or c.qualname == "torch.autograd.backward"
            for c in ctx.facts.calls
        ) or any(
            getattr(t, "attr", None) is not None and t.attr.value == "grad" for a in ctx.facts.assigns for t in a.targets
        )
        ctx.__dict__["_project_may_have_events"] = cached
    return cached


def _returned_classes(ctx: "FileContext", fn) -> Optional[List[str]]:
    """The classes a factory (`def ResNet18(): return ResNet(...)`) returns instances of:
    a class of this module by name, or an imported one by its qualified name; None when
    some return is anything else."""
    import libcst as cst

    out: List[str] = []
    returns = [r for r in ctx.returns_of(fn) if r.value is not None]
    if not returns:
        return None
    values = []
    for r in returns:
        if isinstance(r.value, cst.Name):
            # `net = A()` / `net = B()` in the branches of an `if`: every assignment counts
            # (following the value finds only the textually nearest one).
            sites = [a for a in ctx.facts.assigns if a.function is fn and any(isinstance(t, cst.Name) and t.value == r.value.value for t in a.targets)]
            if any(a.op != "=" or a.value is None for a in sites):
                return None
            if sites:
                values.extend((a.value, a) for a in sites)
                continue
        values.append((r.value, r))
    try:
        for expr, site in values:
            for value, _ in ctx.constructions(expr, site):
                if not isinstance(value, cst.Call):
                    return None
                if isinstance(value.func, cst.Name) and ctx.class_named(value.func.value) is not None:
                    ref = value.func.value
                else:
                    ref = ctx.qualname(value.func)
                    if ref is None:
                        return None
                if ref not in out:
                    out.append(ref)
    except RecursionError:
        return None
    return out


def _read_summary(path: Path, data: bytes) -> dict:
    """Parse a module and summarise it; an empty summary when it cannot be read or parsed."""
    from trainlint.engine import parse_unvalidated
    from trainlint.runner import SourceError, decode_python

    empty = {"v": SUMMARY_VERSION, "classes": {}, "imports": {}}
    if len(data) > MAX_MODULE_BYTES:
        return empty
    try:
        text, _ = decode_python(data)
        module = parse_unvalidated(text)
        from trainlint.analysis.context import FileContext

        return summarise(FileContext(module, text, str(path)))
    except (SourceError, RecursionError, ValueError, MemoryError, SyntaxError):
        return empty
    except Exception:  # libcst's ParserSyntaxError, or a module the analysis trips on
        # Another module's oddity must not fail the file being linted: no facts from it.
        if os.environ.get("TRAINLINT_DEBUG"):
            raise
        return empty


class Project:
    """The modules of one linted project, read on demand and summarised once per process."""

    def __init__(self, root: Optional[Path] = None, cache: Optional["Cache"] = None) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self.cache = cache
        # content hash -> summary: a module is parsed once per process, and an edited
        # module (a long-lived process, a test) is never served its old summary.
        self._summaries: Dict[str, dict] = {}
        # The project's files, read once per run (a Project lives for one run: `new_run`).
        self._scans: Dict[str, Optional[Tuple[str, List[Tuple[Path, Optional[bytes]]]]]] = {}
        self._naming: Dict[Tuple[str, str], List[Tuple[Path, bytes]]] = {}
        self._torch: Dict[str, List[Tuple[Path, bytes]]] = {}

    @staticmethod
    def read(path: Path) -> Optional[bytes]:
        try:
            return path.read_bytes() if path.is_file() else None
        except (OSError, ValueError):  # a name too long, a NUL byte: no such module
            return None

    def module(self, path: Path, data: Optional[bytes] = None) -> Tuple[Optional[str], Optional[dict]]:
        """(content hash, summary) of the module file at `path`; (None, None) when there is none."""
        if data is None:
            data = self.read(path)
        if data is None:
            return None, None
        h = content_hash(data)
        summary = self._summaries.get(h)
        if summary is None:
            summary = self.cache.get_summary(data) if self.cache is not None else None
            if summary is None:
                summary = _read_summary(path, data)
                if self.cache is not None:
                    self.cache.put_summary(data, summary)
            self._summaries[h] = summary
        return h, summary

    def scan(self, root: Path) -> Optional[Tuple[str, List[Tuple[Path, Optional[bytes]]]]]:
        """Every Python file of the project under `root` with its content, read once per
        run, and a hash of them all; None when the tree is too large."""
        key = str(root)
        if key not in self._scans:
            files = project_files(root)
            if files is None:
                self._scans[key] = None
            else:
                entries = [(f, self.read(f)) for f in files]
                self._scans[key] = (tree_hash(entries), [(f, d if d is not None and len(d) <= MAX_MODULE_BYTES else None) for f, d in entries])
        return self._scans[key]

    def naming(self, root: Path, name: str) -> List[Tuple[Path, bytes]]:
        """The project's files whose text contains `name` (a call of it must name it)."""
        key = (str(root), name)
        if key not in self._naming:
            scanned = self.scan(root)
            needle = name.encode()
            self._naming[key] = [(f, d) for f, d in scanned[1] if d is not None and needle in d] if scanned else []
        return self._naming[key]

    def torch_files(self, root: Path) -> List[Tuple[Path, bytes]]:
        """The project's files that name a PyTorch-family package (once per run: in a project
        without PyTorch every later question is answered from an empty list)."""
        key = str(root)
        if key not in self._torch:
            scanned = self.scan(root)
            self._torch[key] = [(f, d) for f, d in scanned[1] if d is not None and precheck.mentions_torch(d)] if scanned else []
        return self._torch[key]

    def remember(self, text: str, ctx: "FileContext") -> None:
        """The summary of a module being linted, from its own parse: a module linted earlier
        in the run (or in an earlier run, through the cache) is never parsed again for it."""
        data = text.encode("utf-8", "surrogateescape")
        h = content_hash(data)
        if h in self._summaries:
            return
        view, ctx.project = ctx.project, None  # the module's own facts, not the project's
        try:
            summary = summarise(ctx)
        except Exception:
            if os.environ.get("TRAINLINT_DEBUG"):
                raise
            return
        finally:
            ctx.project = view
        self._summaries[h] = summary
        if self.cache is not None and self.cache.get_summary(data) is None:
            self.cache.put_summary(data, summary)

    def search_roots(self, file: Path) -> List[Path]:
        """Where an absolute import from `file` may be found: its folder (a script's
        `sys.path[0]`), the folder above its top-most package, the linted root and its src/."""
        roots = [file.parent]
        top = file.parent
        try:
            while (top / "__init__.py").is_file() and top.parent != top:
                top = top.parent
            roots.append(top)
            # The linted root (the configuration's folder, else the working folder) only for
            # a file under it: a script elsewhere does not import the working folder's
            # modules (`python /elsewhere/main.py` puts its own folder on sys.path).
            if self.root is not None and _is_under(file, self.root):
                roots.extend([self.root, self.root / "src"])
            out: List[Path] = []
            for r in roots:
                if r not in out and r.is_dir():
                    out.append(r)
        except (OSError, ValueError):
            return [file.parent]
        return out

    def view(self, path: str) -> "ProjectView":
        return ProjectView(self, Path(os.path.abspath(path)))


class ProjectView:
    """The project as one file sees it: its imports resolved to other modules' summaries."""

    def __init__(self, project: Project, path: Path) -> None:
        self.project = project
        self.path = path
        self.deps: Dict[str, Optional[str]] = {}  # every file consulted -> its hash (None: absent)
        self._roots: Optional[List[Path]] = None
        self._seen: Dict[str, Tuple[Optional[str], Optional[dict]]] = {}

    def _module(self, path: Path) -> Optional[dict]:
        key = str(path)
        known = self._seen.get(key)
        if known is None:
            known = self._seen[key] = self.project.module(path)
            self.deps[key] = known[0]
        return known[1]

    def _module_file(self, base: Path, parts: List[str]) -> Optional[Tuple[Path, dict]]:
        """`base/a/b.py` or `base/a/b/__init__.py` (`parts` empty: `base/__init__.py`)."""
        if parts:
            candidates = [base.joinpath(*parts[:-1], parts[-1] + ".py"), base.joinpath(*parts, "__init__.py")]
        else:
            candidates = [base / "__init__.py"]
        for c in candidates:
            summary = self._module(c)
            if summary is not None:
                return c, summary
        return None

    def class_summary(self, qualname: Optional[str]) -> Optional[Tuple[dict, str]]:
        """The summary of the project class `qualname` (as the file's imports spell it:
        `.models.Net`, `models.net.Net`), and where it is defined; None when it is not a
        class of a project module that can be found. An alternative constructor of such a
        class (`GPT.from_pretrained`, `Net.load`) stands for the class."""
        if not qualname:
            return None
        found = self._resolve(qualname, self.path, 0)
        head, _, method = qualname.rpartition(".")
        if found is None and head.strip(".") and _ALT_CONSTRUCTOR.match(method):
            found = self._resolve(head, self.path, 0)
        return found

    def external_callers(self, name: str) -> Optional[List[dict]]:
        """The calls of this module's function `name` from the other modules of the project
        (see `_evaluation_calls`); None when the project is too large to scan. The result
        depends on every file of the project: their list and contents, hashed together,
        become one dependency."""
        root = self._scan_root()
        scanned = self.project.scan(root)
        if scanned is None:
            return None
        state, entries = scanned
        self.deps[SCAN_PREFIX + str(root)] = state
        me = os.path.realpath(self.path)
        # A module that calls it names this module (`utils.evaluate`, `from .utils import`)
        # or, through a package's re-export, the package: neither, and it is not parsed.
        stem = self.path.stem if self.path.stem != "__init__" else self.path.parent.name
        names = (stem.encode(), self.path.parent.name.encode())
        # Before parsing a candidate for its summary, its text must call the function
        # (`name(` or `mod.name(`) and import this module or its package by name on an import
        # line: a tree of many scripts that each define `test()` would otherwise have every
        # file mentioning `train` parsed (a quarter of a cold run of pytorch/examples).
        calls_it = re.compile(rb"\b" + re.escape(name.encode()) + rb"\s*\(")
        imports_it = re.compile(
            rb"^[ \t]*(?:from|import)[ \t][^\n]*\b(?:" + b"|".join(re.escape(n) for n in names) + rb")\b", re.M
        )
        out: List[dict] = []
        for f, data in self.project.naming(root, name):
            if f == self.path or not any(n in data for n in names):
                continue
            if not calls_it.search(data) or not imports_it.search(data):
                continue
            summary = self.project.module(f, data)[1] or {}
            for call in summary.get("calls", []):
                if call["q"].rsplit(".", 1)[-1] != name:
                    continue
                found = self._resolve(call["q"], f, 0, "function")
                if found is not None and os.path.realpath(found[1]) == me:
                    resolved = {k: self._passed_state(v, f) for k, v in call.get("kw", {}).items()}
                    out.append(dict(
                        call, torch=bool(summary.get("torch")),
                        args=[self._passed_state(v, f) for v in call.get("args", [])], kw=resolved,
                    ))
        return out

    def called_from_torch(self, names: List[str]) -> bool:
        """Some other module of the project imports PyTorch and may call one of this module's
        functions `names`, by its text: it names the function, this module (or its package)
        and a PyTorch-family package. A necessary condition for `external_callers` to find a
        caller in a PyTorch module, read without parsing anything."""
        if not names:
            return False
        root = self._scan_root()
        scanned = self.project.scan(root)
        if scanned is None:
            return False
        self.deps[SCAN_PREFIX + str(root)] = scanned[0]
        stem = self.path.stem if self.path.stem != "__init__" else self.path.parent.name
        mine = (stem.encode(), self.path.parent.name.encode())
        wanted = [n.encode() for n in names]
        return any(
            f != self.path and any(n in data for n in mine) and any(n in data for n in wanted)
            for f, data in self.project.torch_files(root)
        )

    def _passed_state(self, entries: Optional[List[list]], importer: Path) -> Optional[dict]:
        """A caller's argument (`_passed_model`) as the callee needs it: `module` (known to be
        an nn.Module) and `mode_layers` (has dropout/normalisation; the decision
        `Evaluation._imported_class_has_mode_layers` makes for an inline pass: a class that
        cannot be seen has none that matter, and the rule stays silent); None: unknown."""
        if not entries:
            return None
        states = []
        for entry in entries:
            if entry[0] == "local":
                states.append((entry[1], entry[2]))
                continue
            if entry[0] == "function":
                states.append((False, False))  # a function: not a module, and no modes
                continue
            q = entry[1]
            found = self._resolve(q, importer, 0)
            head, _, method = q.rpartition(".")
            if found is None and head.strip(".") and _ALT_CONSTRUCTOR.match(method):
                found = self._resolve(head, importer, 0)  # `Net.from_pretrained(...)`
            if found is None:
                states.append((False, False))  # outside the project, or not there
            else:
                states.append((bool(found[0].get("module")), bool(found[0].get("mode_layers"))))
        return {"module": all(m for m, _ in states), "mode_layers": any(l for _, l in states)}

    def _scan_root(self) -> Path:
        """The folder whose modules may import this one: the linted root when the file lies
        inside it, else the folder above the file's top-most package."""
        root = self.project.root
        if root is not None and _is_under(self.path, root):
            return root
        roots = self.project.search_roots(self.path)
        return roots[1] if len(roots) > 1 else self.path.parent

    def function_summary(self, qualname: Optional[str]) -> Optional[dict]:
        """What the project function `qualname` does when called (see `_function_facts`);
        None when it is not a module-level function of a project module that can be found."""
        if not qualname:
            return None
        found = self._resolve(qualname, self.path, 0, "function")
        return found[0] if found is not None else None

    def factory_output(self, qualname: Optional[str]) -> Optional[Tuple[List[str], str]]:
        """What the model a factory function of another project module builds ends in
        (`model = make_scorer(12)` with `from models import make_scorer`), and where the
        factory is defined."""
        found = self._resolve(qualname, self.path, 0, "function") if qualname else None
        if found is None or not found[0].get("output"):
            return None
        return found[0]["output"], self._display(Path(found[1]))

    def star_class_summary(self, name: str, stars: List[str]) -> Optional[Tuple[dict, str]]:
        """`name` bound by `from m import *`: the last star-imported module that defines it."""
        for module in reversed(stars):
            found = self._resolve(_member(module, name), self.path, 1)
            if found is not None:
                return found
        return None

    def _resolve(self, qualname: str, importer: Path, hops: int, want: str = "class") -> Optional[Tuple[dict, str]]:
        level = len(qualname) - len(qualname.lstrip("."))
        parts = qualname[level:].split(".") if qualname[level:] else []
        if not parts:
            return None
        name, mod = parts[-1], parts[:-1]
        if level:
            base = importer.parent
            for _ in range(level - 1):
                base = base.parent
            bases = [base]
        else:
            if not mod or mod[0] in _EXTERNAL_ROOTS:
                return None
            if importer == self.path:
                if self._roots is None:
                    self._roots = self.project.search_roots(self.path)
                bases = self._roots
            else:
                bases = self.project.search_roots(importer)
        for base in bases:
            found = self._module_file(base, mod)
            if found is not None:
                # The first module found is the one Python would import: it decides.
                return self._defined_in(found[0], found[1], name, hops, want)
        return None

    def _defined_in(self, file: Path, summary: dict, name: str, hops: int, want: str = "class") -> Optional[Tuple[dict, str]]:
        cls = summary.get("classes", {}).get(name)
        if cls is not None:
            return (cls, self._display(file)) if want == "class" else None
        factory = summary.get("functions", {}).get(name)
        if factory is not None and want == "function":
            return factory, str(file)  # where it is defined, to tell which module's it is
        if hops >= MAX_HOPS:
            return None
        if factory is not None:
            made = []
            for ref in factory.get("returns", []):
                if "." not in ref:
                    made.append(self._defined_in(file, summary, ref, hops + 1))
                elif ref.split(".", 1)[0] in precheck.TORCH_ROOTS and not ref.startswith("torch.nn."):
                    # A model zoo's model (torchvision, timm, transformers): it has them.
                    made.append(({"softmax": None, "sigmoid": None, "mode_layers": True, "module": True}, ref))
                else:
                    made.append(self._resolve(ref, file, hops + 1))
            return _combine(made)
        again = summary.get("imports", {}).get(name)
        if again:
            return self._resolve(again, file, hops + 1, want)
        for module in reversed(summary.get("stars", [])):
            found = self._resolve(_member(module, name), file, hops + 1, want)
            if found is not None:
                return found
        return None

    def _display(self, file: Path) -> str:
        root = self.project.root
        try:
            return str(file.relative_to(root)) if root is not None else file.name
        except ValueError:
            return file.name


def constructor_summary(ctx: "FileContext", func) -> Optional[Tuple[dict, str]]:
    """The project class (or factory) that `func` in `func(...)` names, when the file's
    imports lead to one: by an import of the name, or through `from m import *`."""
    import libcst as cst

    view = ctx.project
    if view is None:
        return None
    q = ctx.qualname(func)
    if q is not None:
        return view.class_summary(q)
    if isinstance(func, cst.Name) and ctx.imports.star and ctx.class_named(func.value) is None and ctx.function_named(func.value) is None:
        return view.star_class_summary(func.value, ctx.imports.star)
    return None


def _combine(found: List[Optional[Tuple[dict, str]]]) -> Optional[Tuple[dict, str]]:
    """What a factory returning one of several classes is known to be: an output kind only
    when every class ends in it; mode layers when any class is known to have them."""
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    known = [f for f in found if f is not None]
    if not known:
        return None
    entry: dict = {}
    for label in ("softmax", "sigmoid"):
        entry[label] = known[0][0].get(label) if len(known) == len(found) and all(f[0].get(label) for f in known) else None
    outputs = [f[0].get("output") for f in known]
    entry["output"] = outputs[0] if len(known) == len(found) and outputs[0] and all(o and o[0] == outputs[0][0] for o in outputs) else None
    entry["mode_layers"] = any(f[0].get("mode_layers") for f in known)
    entry["module"] = len(known) == len(found) and all(f[0].get("module") for f in known)
    return entry, known[0][1]


SCAN_PREFIX = "scan:"
# A larger tree (a monorepo, a home folder linted from its top): callers are not looked for.
MAX_SCAN_FILES = 2000
MAX_SCAN_FOLDERS = 5000
_SKIP_DIRS = frozenset({
    "node_modules", "site-packages", "__pycache__", "build", "dist", "venv", "env", "third_party",
})


def project_files(root: Path) -> Optional[List[Path]]:
    """The Python files under `root` (hidden, virtual-env and build folders left out), in a
    stable order; None when there are more than MAX_SCAN_FILES."""
    out: List[Path] = []
    folders = 0
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
            for n in sorted(filenames):
                if n.endswith(".py"):
                    out.append(Path(dirpath, n))
            folders += 1
            if len(out) > MAX_SCAN_FILES or folders > MAX_SCAN_FOLDERS:
                return None
    except (OSError, ValueError):
        return None
    return out


def tree_hash(entries: List[Tuple[Path, Optional[bytes]]]) -> str:
    """One hash of the files' names and contents: any file added, removed or edited changes it."""
    h = hashlib.sha256()
    for f, data in entries:
        h.update(str(f).encode("utf-8", "surrogateescape") + b"\0")
        h.update(content_hash(data).encode() if data is not None else b"-")
    return h.hexdigest()[:32]


def tree_state(root: Path) -> Optional[str]:
    files = project_files(root)
    return tree_hash([(f, Project.read(f)) for f in files]) if files is not None else None


def deps_unchanged(deps: Dict[str, Optional[str]], trees: Optional[Dict[str, Optional[str]]] = None) -> bool:
    """Every file a cached result depended on is as it was (absent ones still absent), and
    every project tree it scanned holds the same files with the same contents. `trees`
    keeps each tree's state for the rest of the run (checked once, not once per file)."""
    trees = {} if trees is None else trees
    for path, h in deps.items():
        if path.startswith(SCAN_PREFIX):
            if path not in trees:
                trees[path] = tree_state(Path(path[len(SCAN_PREFIX):]))
            if trees[path] != h:
                return False
            continue
        try:
            data = Path(path).read_bytes()
        except (OSError, ValueError):
            data = None
        if (content_hash(data) if data is not None else None) != h:
            return False
    return True


_PROJECTS: Dict[Tuple[Optional[str], Optional[str]], Project] = {}


def new_run() -> None:
    """Forget the projects read so far: a run starts from the files as they are now (a
    process that lints several times, as the tests do, never sees an earlier run's files)."""
    _PROJECTS.clear()


def project_for(root: Optional[str], cache_dir: Optional[str]) -> Project:
    """One Project per (root, cache) per process: a worker keeps its summaries across files."""
    key = (root, cache_dir)
    p = _PROJECTS.get(key)
    if p is None:
        cache = None
        if cache_dir is not None:
            from trainlint.cache import Cache

            cache = Cache(Path(cache_dir))
        p = _PROJECTS[key] = Project(Path(root) if root else None, cache)
    return p
