"""The benchmark harness: alternating order and overhead.py end to end on the shipped slice."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pairs import alternating_rounds, ratios_to  # noqa: E402

from tests.conftest import FMNIST_SLICE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_rounds_alternate_their_order_and_ratios_pair_up_by_round() -> None:
    calls: list[str] = []
    counter = iter(range(1, 100))

    def measure(label: str):
        return lambda: calls.append(label) or float(next(counter))

    values = alternating_rounds({"a": measure("a"), "b": measure("b"), "c": measure("c")}, pairs=3, base="c")
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert values == {"a": [1.0, 6.0, 7.0], "b": [2.0, 5.0, 8.0], "c": [3.0, 4.0, 9.0]}
    assert ratios_to(values, "c") == {"a": [1 / 3, 6 / 4, 7 / 9], "b": [2 / 3, 5 / 4, 8 / 9]}


def test_alternating_rounds_rejects_zero_pairs() -> None:
    with pytest.raises(SystemExit, match="--pairs must be >= 1"):
        alternating_rounds({"a": lambda: 1.0}, pairs=0)


def test_overhead_prints_three_ratios_on_the_shipped_slice() -> None:
    done = subprocess.run([sys.executable, "benchmarks/overhead.py", "--data-root", str(FMNIST_SLICE), "--steps", "3",
                           "--pairs", "1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"pair 0: train\.py [\d.]+, bare [\d.]+, hand [\d.]+ samples/s", done.stdout)
    for label in ("train.py/hand", r"bare Lightning/hand \(Lightning's own loop\)",
                  r"train.py/bare Lightning \(our stack\)"):
        assert re.search(rf"throughput ratio {label} = \d+\.\d{{3}} \(spread", done.stdout), label
