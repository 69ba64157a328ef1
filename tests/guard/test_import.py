"""`import guard` without PyTorch/NumPy: one clear line naming the extra to install."""
import os
import subprocess
import sys
import textwrap

import pytest

_BLOCK = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    sys.meta_path.insert(0, Block())
    try:
        import guard
    except ImportError as exc:
        print("ERROR", type(exc).__name__, exc)
    else:
        print("OK")
""")


def _import_guard_without(blocked):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _BLOCK.format(blocked=set(blocked))],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("blocked", [("torch", "numpy"), ("torch",), ("numpy",)])
def test_missing_torch_or_numpy_names_the_extra(blocked):
    line = _import_guard_without(blocked)
    assert line.startswith("ERROR ImportError"), line
    assert 'pip install "trainlint[guard]"' in line
    assert "not installed" in line


def test_with_both_installed_the_import_works():
    assert _import_guard_without(()) == "OK"
