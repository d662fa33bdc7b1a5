"""Per-stage timing (decode, pre-process, inference, post-process, publish) for the tools.

One small accumulator shared by ``benchmark``, ``predict``, the depth node and its benchmark, so
every breakdown is computed and printed the same way. Costs a ``perf_counter`` call per stage.
"""

from __future__ import annotations

from collections import deque

import numpy as np

# Canonical order; a tool reports the stages it has (predict writes files instead of publishing).
STAGES = ("decode", "preprocess", "inference", "postprocess", "publish", "write")


class StageTimes:
    """Seconds per stage over the last ``maxlen`` frames; p50 / mean / share in milliseconds."""

    def __init__(self, maxlen: int = 1000):
        self._d: dict[str, deque[float]] = {}
        self._maxlen = maxlen

    def add(self, stage: str, seconds: float) -> None:
        self._d.setdefault(stage, deque(maxlen=self._maxlen)).append(float(seconds))

    def update(self, times: dict[str, float]) -> None:
        for stage, seconds in times.items():
            self.add(stage, seconds)

    def stages(self) -> list[str]:
        known = [s for s in STAGES if s in self._d]
        return known + sorted(s for s in self._d if s not in STAGES)

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {p50_ms, mean_ms, p99_ms, n}} in canonical stage order."""
        out = {}
        for s in self.stages():
            t = np.asarray(self._d[s], dtype=np.float64) * 1e3
            out[s] = {"p50_ms": float(np.median(t)), "mean_ms": float(t.mean()),
                      "p99_ms": float(np.percentile(t, 99)), "n": int(t.size)}
        return out


def breakdown_markdown(summaries: dict[str, dict[str, dict[str, float]]]) -> str:
    """One markdown table: a row per run (label), a column per stage: 'p50 / mean' ms, plus the
    sum of the means and each stage's share of it."""
    stages: list[str] = []
    for summ in summaries.values():
        stages += [s for s in summ if s not in stages]
    stages = [s for s in STAGES if s in stages] + [s for s in stages if s not in STAGES]
    head = "| run | " + " | ".join(f"{s} ms p50 / mean" for s in stages) + " | sum of means ms |"
    out = [head, "|---" * (len(stages) + 2) + "|"]
    for label, summ in summaries.items():
        total = sum(v["mean_ms"] for v in summ.values())
        cells = []
        for s in stages:
            v = summ.get(s)
            cells.append(f"{v['p50_ms']:.1f} / {v['mean_ms']:.1f} "
                         f"({v['mean_ms'] / total:.0%})" if v and total > 0 else "-")
        out.append(f"| {label} | " + " | ".join(cells) + f" | {total:.1f} |")
    return "\n".join(out)
