"""benchmarks/ecosystem/check.py: fingerprints, comparison, precision, corpus and baseline files.

No network: the end-to-end test builds a small git repository as the `--mirror`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ecosystem" / "check.py"


@pytest.fixture(scope="module")
def eco():
    spec = importlib.util.spec_from_file_location("ecosystem_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ecosystem_check"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def finding(eco, line, text, code="TL204", path="train.py", repo="r", column=1, cell=None):
    return eco.Finding(repo, path, code, line, column, cell, text)


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_survives_line_shifts_and_reindentation(eco):
    before = eco.assign_fingerprints([finding(eco, 10, "    p = F.softmax(x)"), finding(eco, 30, "x = torch.load(path)", "TL602")])
    after = eco.assign_fingerprints([finding(eco, 52, "        p = F.softmax(x)"),
                                     finding(eco, 71, "x = torch.load(path)", "TL602")])
    assert [f.fingerprint for f in before] == [f.fingerprint for f in after]


def test_fingerprint_changes_with_text_code_or_path(eco):
    base = eco.fingerprint("TL204", "a.py", "p = F.softmax(x)", 0)
    assert eco.fingerprint("TL204", "a.py", "p = F.softmax(y)", 0) != base
    assert eco.fingerprint("TL203", "a.py", "p = F.softmax(x)", 0) != base
    assert eco.fingerprint("TL204", "b.py", "p = F.softmax(x)", 0) != base
    assert eco.fingerprint("TL204", "a.py", "p  =  F.softmax(x)  ", 0) == base


def test_identical_lines_get_distinct_fingerprints_by_order(eco):
    two = eco.assign_fingerprints([finding(eco, 20, "net = Net()"), finding(eco, 5, "net = Net()")])
    assert two[0].line == 5 and len({f.fingerprint for f in two}) == 2
    # A third copy further down leaves the first two as they were.
    three = eco.assign_fingerprints([finding(eco, 5, "net = Net()"), finding(eco, 20, "net = Net()"),
                                     finding(eco, 90, "net = Net()")])
    assert [f.fingerprint for f in three[:2]] == [f.fingerprint for f in two]


def test_notebook_findings_order_by_cell_then_line(eco):
    fs = eco.assign_fingerprints([finding(eco, 1, "y = F.softmax(x)", path="nb.ipynb", cell=9),
                                  finding(eco, 7, "y = F.softmax(x)", path="nb.ipynb", cell=3)])
    assert [f.cell for f in fs] == [3, 9]
    assert fs[0].where == "cell 3:7"


# --------------------------------------------------------------------------- comparison


def judged(eco, f, verdict, reason="why"):
    return eco.Judged(f.repo, f.path, f.where, f.code, f.fingerprint, verdict, reason)


def test_compare_matches_new_and_vanished(eco):
    a, b, c = eco.assign_fingerprints([finding(eco, 1, "a"), finding(eco, 2, "b"), finding(eco, 3, "c")])
    baseline = [judged(eco, a, "true"), judged(eco, b, "false")]
    cmp = eco.compare([a, c], baseline)
    assert [(f.text, row.verdict) for f, row in cmp.matched] == [("a", "true")]
    assert [f.text for f in cmp.new] == ["c"]
    assert [r.fingerprint for r in cmp.vanished] == [b.fingerprint]


def test_compare_of_a_partial_run_reports_nothing_it_did_not_look_for(eco):
    (a,) = eco.assign_fingerprints([finding(eco, 1, "a", repo="one")])
    (b,) = eco.assign_fingerprints([finding(eco, 1, "b", repo="two")])
    (c,) = eco.assign_fingerprints([finding(eco, 2, "c", repo="one", code="TL602")])
    baseline = [judged(eco, a, "true"), judged(eco, b, "true"), judged(eco, c, "false")]
    assert [r.repo for r in eco.compare([], baseline).vanished] == ["one", "one", "two"]
    assert {r.repo for r in eco.compare([], baseline, repos={"one"}).vanished} == {"one"}
    assert [r.code for r in eco.compare([], baseline, repos={"one"}, codes={"TL602"}).vanished] == ["TL602"]


def test_updated_baseline_keeps_verdicts_adds_unjudged_drops_vanished(eco):
    a, b, c = eco.assign_fingerprints([finding(eco, 1, "a"), finding(eco, 2, "b"), finding(eco, 3, "c")])
    (other,) = eco.assign_fingerprints([finding(eco, 1, "z", repo="elsewhere")])
    baseline = [judged(eco, a, "true", "real"), judged(eco, b, "false", "wrong"), judged(eco, other, "debatable")]
    a.line = 40  # the code moved
    cmp = eco.compare([a, c], baseline, repos={"r"})
    rows = {r.fingerprint: r for r in eco.updated_baseline(cmp, baseline, {"r"}, None)}
    assert rows[a.fingerprint].verdict == "true" and rows[a.fingerprint].line == "40"
    assert rows[c.fingerprint].verdict == "unjudged"
    assert b.fingerprint not in rows
    assert rows[other.fingerprint].verdict == "debatable"  # not linted this run: kept


# --------------------------------------------------------------------------- precision


def test_precision_leaves_debatable_out_and_strict_counts_it_false(eco):
    per_rule, overall = eco.tally([("TL101", "true")] * 3 + [("TL101", "false"), ("TL101", "debatable"),
                                  ("TL101", "unjudged"), ("TL602", "false")])
    t = per_rule["TL101"]
    assert (t.true, t.false, t.debatable, t.unjudged, t.total) == (3, 1, 1, 1, 6)
    assert t.precision == pytest.approx(0.75)
    assert t.strict_precision == pytest.approx(0.6)
    assert overall.precision == pytest.approx(3 / 5)
    assert per_rule["TL602"].precision == 0.0


def test_precision_is_undefined_without_judged_findings_and_tl000_is_apart(eco):
    per_rule, overall = eco.tally([("TL000", "true"), ("TL204", "unjudged"), ("TL204", "debatable")])
    assert overall.total == 2 and overall.precision is None
    assert per_rule["TL204"].strict_precision == 0.0
    table = eco.markdown_table(per_rule, overall)
    assert "TL000" not in table
    assert "| TL204 | 2 | 0 | 0 | 1 | 1 | – | 0.00 |" in table
    assert table.splitlines()[-1].startswith("| **all** | **2** |")


# --------------------------------------------------------------------------- files


def test_baseline_round_trip_and_validation(eco):
    (a,) = eco.assign_fingerprints([finding(eco, 3, "a")])
    text = eco.write_baseline([eco.Judged("r", "x.py", "3", "TL204", a.fingerprint, "false", "tab\there\nand newline")])
    assert text.splitlines()[0].split("\t") == list(eco.BASELINE_COLUMNS)
    (row,) = eco.read_baseline(text)
    assert row.reason == "tab here and newline" and row.verdict == "false"
    with pytest.raises(ValueError, match="verdict"):
        eco.read_baseline(text.replace("\tfalse\t", "\tmaybe\t"))
    with pytest.raises(ValueError, match="columns"):
        eco.read_baseline("r\tx.py\t3\n")


def test_corpus_validation(eco):
    sha = "a" * 40
    ok = {"project": [{"name": "x", "github": "o/r", "commit": sha},
                      {"name": "y", "pypi": "pkg", "version": "1.0", "package": "wheel", "subpaths": ["pkg/train"]}]}
    entries = eco.parse_corpus(ok)
    assert [(e.kind, e.source, e.pin) for e in entries] == [("github", "o/r", sha), ("pypi", "pkg", "1.0")]
    bad = [
        {"project": [{"name": "x", "github": "o/r", "commit": "abc123"}]},
        {"project": [{"name": "x", "github": "o/r", "commit": sha}, {"name": "x", "github": "o/s", "commit": sha}]},
        {"project": [{"name": "x", "github": "o/r", "commit": sha, "subpaths": ["../up"]}]},
        {"project": [{"name": "x", "pypi": "pkg"}]},
        {"project": [{"name": "x"}]},
    ]
    for data in bad:
        with pytest.raises(eco.CorpusError):
            eco.parse_corpus(data)


def test_committed_corpus_and_baseline_agree(eco):
    entries = eco.load_corpus()
    assert len(entries) >= 25
    names = {e.name for e in entries}
    rows = eco.read_baseline(eco.BASELINE.read_text())
    assert rows and {r.repo for r in rows} <= names
    assert len({(r.repo, r.fingerprint) for r in rows}) == len(rows)
    assert all(r.reason for r in rows if r.verdict != "unjudged")


# --------------------------------------------------------------------------- end to end (local git, no network)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, files: dict) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    return _git(repo, "rev-parse", "HEAD")


TRAIN = "import torch\nimport torch.nn.functional as F\n\n\ndef head(x):\n    return F.softmax(x)\n"


def test_end_to_end_with_a_mirror_survives_a_line_shift(eco, tmp_path, capsys):
    repo = tmp_path / "mirror" / "someone+proj" / "repo"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    first = _commit(repo, {"train.py": TRAIN, "notes.txt": "not copied", "sub/model.py": "x = 1\n"})
    second = _commit(repo, {"train.py": "# a comment\n# and another\n" + TRAIN})
    corpus, baseline, cache = tmp_path / "corpus.toml", tmp_path / "baseline.tsv", tmp_path / "cache"

    def run(sha, *extra):
        corpus.write_text(f'[[project]]\nname = "proj"\ngithub = "someone/proj"\ncommit = "{sha}"\n')
        return eco.main(["--cache", str(cache), "--mirror", str(tmp_path / "mirror"), "--corpus", str(corpus),
                         "--baseline", str(baseline), "--jobs", "1", "--rules", "TL204", *extra])

    assert run(first, "--strict") == 1  # one new, unjudged finding
    assert (cache / "proj" / "train.py").exists() and (cache / "proj" / "sub" / "model.py").exists()
    assert not (cache / "proj" / "notes.txt").exists()
    assert run(first, "--update-baseline") == 0
    (row,) = eco.read_baseline(baseline.read_text())
    assert (row.path, row.line, row.code, row.verdict) == ("train.py", "6", "TL204", "unjudged")
    baseline.write_text(baseline.read_text().replace("\tunjudged\t", "\ttrue\timplicit dim"))
    capsys.readouterr()

    assert run(second, "--strict", "--update-baseline") == 0  # moved two lines down: still matched
    out = capsys.readouterr().out
    assert "No new and no vanished findings." in out
    assert "| TL204 | 1 | 1 | 0 | 0 | 0 | 1.00 | 1.00 |" in out
    (row,) = eco.read_baseline(baseline.read_text())
    assert (row.line, row.verdict, row.reason) == ("8", "true", "implicit dim")


def test_cache_inside_the_repository_is_refused(eco, capsys):
    assert eco.main(["--cache", str(ROOT / "benchmarks" / "ecosystem" / "cache")]) == 2
    assert "outside this repository" in capsys.readouterr().err


def test_a_failing_linter_is_an_error_not_a_traceback(eco, tmp_path, capsys):
    repo = tmp_path / "mirror" / "someone+proj" / "repo"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    sha = _commit(repo, {"train.py": TRAIN})
    corpus = tmp_path / "corpus.toml"
    corpus.write_text(f'[[project]]\nname = "proj"\ngithub = "someone/proj"\ncommit = "{sha}"\n')
    code = eco.main(["--cache", str(tmp_path / "cache"), "--mirror", str(tmp_path / "mirror"), "--corpus", str(corpus),
                     "--baseline", str(tmp_path / "b.tsv"), "--trainlint", f"{sys.executable} -c 'raise SystemExit(2)'"])
    assert code == 2
    assert "trainlint exited 2 on proj" in capsys.readouterr().err


def test_exclude_leaves_files_out_and_a_changed_entry_is_exported_again(eco, tmp_path):
    repo = tmp_path / "mirror" / "someone+proj" / "repo"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    sha = _commit(repo, {"train.py": TRAIN, "big/notebook.ipynb": "{}", "requirements-dev.txt": "torch<2\n"})
    data = {"project": [{"name": "proj", "github": "someone/proj", "commit": sha, "exclude": ["big/notebook.ipynb"]}]}
    (entry,) = eco.parse_corpus(data)
    cache = tmp_path / "cache"
    root, note = eco.materialise(entry, cache, tmp_path / "mirror")
    assert note == "2 files"
    assert (root / "train.py").exists() and (root / "requirements-dev.txt").exists()
    assert not (root / "big" / "notebook.ipynb").exists()
    assert eco.materialise(entry, cache, tmp_path / "mirror")[1] == "cached"
    # Without the exclude the stamp differs, so the files are exported again.
    (entry,) = eco.parse_corpus({"project": [dict(data["project"][0], exclude=[])]})
    root, note = eco.materialise(entry, cache, tmp_path / "mirror")
    assert note == "3 files" and (root / "big" / "notebook.ipynb").exists()
    with pytest.raises(eco.CorpusError):
        eco.parse_corpus({"project": [dict(data["project"][0], exclude=["../x.py"])]})


def test_rules_selection_names_the_codes_compared(eco):
    seen = {"TL101", "TL102", "TL301", "TL602"}
    assert eco._codes_of(None, seen) is None
    assert eco._codes_of("ALL", seen) is None
    assert eco._codes_of("TL1", seen) == {"TL101", "TL102"}
    assert eco._codes_of("TL301,tl602", seen) == {"TL301", "TL602"}
    assert eco._codes_of("TL503", seen) == {"TL503"}  # a rule with no finding yet: nothing of others vanishes
