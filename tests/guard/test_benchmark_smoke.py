"""The overhead benchmark still runs (tiny sizes; no timing assertions here)."""
import importlib.util
import json
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "guard_overhead.py"


def test_benchmark_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("guard_overhead", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        mod.main(["--rounds", "1", "--steps", "3", "--warmup", "1", "--hidden", "16",
                  "--inputs", "16", "--batch", "8", "--threads", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["median_ratio"] > 0 and result["rounds"] == 1
