"""KernelSHAP on resnet18 (2 images, 64 px, an 8 x 8 grid of 64 segments, 128 coalitions each, 1 thread):
deepscope's kernel_shap vs Captum's KernelShap as users call it (one coalition per forward pass) and with its best
batching (perturbations_per_eval=64, the rows deepscope batches).

Goal (issue 18): the coalitions evaluated in full batches. Run: .venv/bin/python bench/bench_shap.py
"""

from __future__ import annotations

import argparse
import warnings

from captum.attr import KernelShap
from common import report, resnet18_batch, timed_together

import deepscope as ds
from deepscope.explain.perturbation import grid_segments


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    model, x, classes = resnet18_batch(args.batch, args.size)
    mask = grid_segments((args.size, args.size), 8)[None, None]
    peer = KernelShap(model)

    def ours() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.explain(model, x, method="kernel_shap", target=classes, samples=args.samples, seed=0, batch_size=64)

    def captum_default() -> None:
        for i in range(len(x)):  # Captum's KernelShap explains one input per call
            peer.attribute(x[i : i + 1], target=int(classes[i]), feature_mask=mask, n_samples=args.samples)

    def captum_batched() -> None:
        for i in range(len(x)):
            peer.attribute(
                x[i : i + 1],
                target=int(classes[i]),
                feature_mask=mask,
                n_samples=args.samples,
                perturbations_per_eval=64,
            )

    rows = timed_together(
        {
            "deepscope kernel_shap (batches of 64)": ours,
            "Captum KernelShap (as called by default)": captum_default,
            "Captum KernelShap (perturbations_per_eval=64)": captum_batched,
        },
        repeat=args.repeat,
    )
    title = f"KernelSHAP, resnet18, {args.batch} images of {args.size} px, 64 segments, {args.samples} coalitions each"
    return report(title, rows, reference="Captum KernelShap (perturbations_per_eval=64)")


if __name__ == "__main__":
    main()
