"""The SGLang paper's workloads as programs in radixgen's language, run side by side on several
systems: `python -m benchmarks.workloads --workloads mmlu,tot --systems radixgen,no-cache`.

Modules: one per workload (data + program + checker), `systems.py` (the systems compared),
`recording.py` (every request a system receives), `metrics.py` (throughput, latency, hit
rates, the optimal hit rate), `runner.py` (one workload on one system), `report.py` (tables and
chart), `__main__.py` (the command line).
"""

from __future__ import annotations

from benchmarks.workloads import (
    chat,
    hellaswag,
    json_decode,
    llm_judge,
    mmlu,
    rag,
    react,
    skeleton_of_thought,
    tree_of_thought,
)
from benchmarks.workloads.base import Workload

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        mmlu.WORKLOAD,
        hellaswag.WORKLOAD,
        chat.SHORT,
        chat.LONG,
        tree_of_thought.WORKLOAD,
        skeleton_of_thought.WORKLOAD,
        llm_judge.WORKLOAD,
        json_decode.WORKLOAD,
        react.WORKLOAD,
        rag.WORKLOAD,
    )
}
"""Every workload by command-line name, in the order of the paper's figure (roughly)."""
