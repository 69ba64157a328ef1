"""The base every rule derives from (Fixit style: one class, docs and examples beside it)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Iterator, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover - libcst is only needed once a file is parsed
    import libcst as cst

    from trainlint.analysis.context import FileContext


@dataclass(frozen=True)
class Replacement:
    """A fix as a tree rewrite: `old` (a node of the linted module) becomes `new`."""

    old: "cst.CSTNode"
    new: "cst.CSTNode"
    applicability: str = "safe"  # or "unsafe"
    description: str = ""


@dataclass(frozen=True)
class Report:
    """What a rule yields: the node to point at, the message, an optional fix, and the
    finding's own severity when it differs from the rule's (one of the rule's `severities`)."""

    node: "cst.CSTNode"
    message: str
    fix: Optional[Replacement] = None
    severity: Optional[str] = None


class Rule:
    """A lint rule.

    Subclasses set `code`, `name`, `severity`, a docstring in the form
    *What it does / Why is this bad? / Example / Use instead*, `VALID` and
    `INVALID` example sources (run by the generic rule test). What text a file
    must contain for the rule to be able to fire (the pre-check that lets the engine
    skip parsing) is the rule's entry in `trainlint/precheck.py`.
    """

    code: ClassVar[str] = ""
    name: ClassVar[str] = ""
    severity: ClassVar[str] = "error"
    # Other severities one of its findings may carry (a report's `severity`), e.g. "info"
    # where the rule cannot read what would make the finding certain.
    severities: ClassVar[Tuple[str, ...]] = ()
    fixable: ClassVar[Optional[str]] = None  # None, "safe" or "unsafe"
    VALID: ClassVar[Tuple[str, ...]] = ()
    INVALID: ClassVar[Tuple[str, ...]] = ()

    def check(self, ctx: "FileContext") -> Iterator[Report]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def doc(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def summary(cls) -> str:
        """The first sentence of the docs' *What it does* paragraph (for tables and SARIF)."""
        lines = [ln.strip() for ln in cls.doc().splitlines()]
        para: list = []
        for i, ln in enumerate(lines):
            if ln.lower().lstrip("# ").startswith("what it does"):
                for nxt in lines[i + 1 :]:
                    if not nxt and para:
                        break
                    if nxt:
                        para.append(nxt)
                break
        text = " ".join(para) or cls.name
        end = text.find(". ")
        sentence = text if end < 0 else text[: end + 1]
        if len(sentence) > 160:
            sentence = sentence[:157].rsplit(" ", 1)[0] + "..."
        return sentence
