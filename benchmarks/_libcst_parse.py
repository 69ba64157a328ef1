"""The bare-libcst baseline: parse every file named in a list file with `libcst.parse_module`.

Run by benchmarks/linter_speed.py as `python _libcst_parse.py FILE_LIST`: one process,
files in order, nothing but the import of libcst, reading and parsing (no metadata,
no visitor). Prints how many files parsed and how many libcst rejected.
"""

import sys

import libcst


def main(list_file: str) -> int:
    with open(list_file, encoding="utf-8") as fh:
        paths = [line.rstrip("\n") for line in fh if line.strip()]
    ok = failed = 0
    for path in paths:
        with open(path, "rb") as fh:
            source = fh.read()
        try:
            libcst.parse_module(source)  # bytes: libcst detects the encoding like Python
            ok += 1
        except Exception:  # syntax libcst does not support, bad encodings: counted, not fatal
            failed += 1
    print(f"parsed {ok} files, {failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
