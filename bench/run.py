"""Run every benchmark in this folder, each against its peer in the same process.

Run: .venv/bin/python bench/run.py [name ...]
(names: gradcam, integrated_gradients, occlusion, faithfulness, embed, tsne, scalars, watch, board, board_page,
tensorboard_board, projector, maximize, top_patches, store_postgres, board_postgres, probes, explore, shap)
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

BENCHMARKS = [
    "gradcam",
    "integrated_gradients",
    "occlusion",
    "faithfulness",
    "embed",
    "tsne",
    "scalars",
    "watch",
    "board",
    "board_page",
    "tensorboard_board",
    "projector",
    "maximize",
    "top_patches",
    "store_postgres",
    "board_postgres",
    "probes",
    "explore",
    "shap",
]

# Arguments for the default run: Lucent needs about 0.5 s per step per channel on 2 cores, so the full-size
# maximisation bench (64 channels x 256 steps) would take hours; --quick extrapolates per channel-step, saying so.
ARGUMENTS: dict[str, list[str]] = {"maximize": ["--quick"]}


def main(argv: list[str] | None = None) -> None:
    names = (argv if argv is not None else sys.argv[1:]) or BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}")
    for name in names:
        importlib.import_module(f"bench_{name}").main(ARGUMENTS.get(name, []))


if __name__ == "__main__":
    main()
