"""Median of alternating pairs: how every ratio in benchmarks/ is measured on a shared, loaded machine.

Imported by the benchmark scripts (``python benchmarks/<name>.py`` puts this folder first on the module path).
"""
import statistics
from typing import Callable


def alternating_pairs(first: Callable[[], float], second: Callable[[], float], pairs: int,
                      unit: str = "") -> list[float]:
    """Measures ``first`` and ``second`` ``pairs`` times, the order alternating (AB, BA, AB, ...) so that drift in
    the machine's load hits both alike; prints each pair and returns the ratios first/second."""
    if pairs < 1:
        raise SystemExit(f"error: --pairs must be >= 1, got {pairs}")
    ratios = []
    for i in range(pairs):
        if i % 2 == 0:
            a = first()
            b = second()
        else:
            b = second()
            a = first()
        ratios.append(a / b)
        print(f"  pair {i}: {a:12.6g} vs {b:12.6g} {unit}  ratio {ratios[-1]:.3f}", flush=True)
    return ratios


def summary(ratios: list[float], label: str, target: str = "") -> str:
    """``label = median (spread min-max, n pairs)`` plus the target, as one line."""
    return (f"{label} = {statistics.median(ratios):.3f} (spread {min(ratios):.3f}-{max(ratios):.3f} over "
            f"{len(ratios)} alternating pairs){f'  target {target}' if target else ''}")
