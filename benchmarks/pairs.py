"""Median of alternating pairs: how every ratio in benchmarks/ is measured on a shared, loaded machine.

Imported by the benchmark scripts (``python benchmarks/<name>.py`` puts this folder first on the module path).
"""
import statistics
from typing import Callable, Optional


def alternating_rounds(measures: dict[str, Callable[[], float]], pairs: int, unit: str = "",
                       base: Optional[str] = None) -> dict[str, list[float]]:
    """Measures every entry of ``measures`` once per round for ``pairs`` rounds, the order reversed every other round
    (ABC, CBA, ABC, ...) so that drift in the machine's load hits all alike and every two entries form an alternating
    pair in each round; prints each round (with the ratios to ``base`` if given) and returns every entry's values,
    round by round."""
    if pairs < 1:
        raise SystemExit(f"error: --pairs must be >= 1, got {pairs}")
    values: dict[str, list[float]] = {label: [] for label in measures}
    order = list(measures)
    for i in range(pairs):
        for label in order if i % 2 == 0 else order[::-1]:
            values[label].append(measures[label]())
        line = ", ".join(f"{label} {v[-1]:.6g}" for label, v in values.items()) + (f" {unit}" if unit else "")
        if base is not None:
            line += "; ratio " + ", ".join(f"{label}/{base} {r[-1]:.3f}"
                                           for label, r in ratios_to(values, base).items())
        print(f"  pair {i}: {line}", flush=True)
    return values


def ratios_to(values: dict[str, list[float]], base: str) -> dict[str, list[float]]:
    """Per-round ratios of every other entry of ``alternating_rounds``' values to ``base``."""
    return {label: [v / b for v, b in zip(vs, values[base])] for label, vs in values.items() if label != base}


def alternating_pairs(first: Callable[[], float], second: Callable[[], float], pairs: int, unit: str = "",
                      labels: tuple[str, str] = ("first", "second")) -> list[float]:
    """``alternating_rounds`` of two (AB, BA, AB, ...); returns the per-pair ratios first/second."""
    values = alternating_rounds(dict(zip(labels, (first, second))), pairs, unit, base=labels[1])
    return ratios_to(values, labels[1])[labels[0]]


def summary(ratios: list[float], label: str, target: str = "") -> str:
    """``label = median (spread min-max, n pairs)`` plus the target, as one line."""
    return (f"{label} = {statistics.median(ratios):.3f} (spread {min(ratios):.3f}-{max(ratios):.3f} over "
            f"{len(ratios)} alternating pairs){f'  target {target}' if target else ''}")
