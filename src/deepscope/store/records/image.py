"""Images: pixels at a step, kept as PNG files beside the run; and the pictures ``run.log`` takes (matplotlib
figures, PIL images, image tensors and arrays, the feature views' results)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, is_tensor, loggable, pixels, register, unreadable

KIND = "image"


@dataclass(frozen=True)
class Image:
    """An image at a step: ``pixels`` uint8 ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` (or floats in [0, 1]).

    The store keeps it as a PNG file beside the run's database; reading it back gives uint8 pixels.
    """

    tag: str
    step: int
    pixels: np.ndarray
    caption: str = ""
    wall_time: float | None = None


def png(image: np.ndarray) -> bytes:
    """uint8 pixels as PNG bytes."""
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def read_png(files: FileSource, relative: str, what: str, tag: str, step: int) -> np.ndarray:
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(files.read(relative))) as image:
            return np.asarray(image)
    except OSError as e:
        raise unreadable(files, relative, what, tag, step, e) from e


@register
class ImageCodec(Codec):
    kind = KIND
    record = Image
    has_files = True
    view = "images"

    def normalise(self, record: Image) -> dict[str, Any]:
        return {"pixels": pixels(record.tag, record.pixels)}

    def encode(self, record: Image, files: FileSink) -> Stored:
        file = files.put(".png", png(record.pixels))
        data = {"caption": record.caption, "shape": list(record.pixels.shape)}
        return Stored(int(record.step), record.wall_time, data, file)

    def decode(self, tag: str, stored: Stored, files: FileSource) -> Image:
        assert stored.file is not None
        image = read_png(files, stored.file, "an image", tag, stored.step)
        return Image(tag, stored.step, image, caption=stored.data["caption"], wall_time=stored.wall_time)


@loggable(("matplotlib.figure", "Figure"), description="matplotlib Figures")
def _figure(value: Any, tag: str, step: int) -> list[Any]:
    return [figure_image(value, tag, step)]


def figure_image(figure: Any, tag: str = "figure", step: int = 0) -> Image:
    """The :class:`Image` record of a ``matplotlib.figure.Figure``, drawn at its own size and dpi.

    The figure is drawn by a ``FigureCanvasAgg`` of its own and then given its canvas back (a notebook's, a
    window's), as ``savefig`` does: pyplot and the backend are never touched.
    """
    from ...render import figure_rgba

    rgba = figure_rgba(figure)
    return Image(tag, step, rgba[:, :, :3] if (rgba[:, :, 3] == 255).all() else rgba)


@loggable(("PIL.Image", "Image"), description="PIL images")
def _pil(value: Any, tag: str, step: int) -> list[Any]:
    return [pil_image(value, tag, step)]


def pil_image(image: Any, tag: str = "image", step: int = 0) -> Image:
    """The :class:`Image` record of a PIL image: grey, RGB and RGBA as they are, other modes as RGB (RGBA if they
    have transparency)."""
    if image.mode not in ("L", "RGB", "RGBA"):
        transparent = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "RGB")
    return Image(tag, step, np.asarray(image))


@loggable(
    ("torch", "Tensor"),
    ("numpy", "ndarray"),
    description="image tensors and arrays ([H, W], [C, H, W] or [H, W, C], C = 1, 3, 4; uint8 or float in [0, 1])",
)
def _array(value: Any, tag: str, step: int) -> list[Any]:
    return [array_image(value, tag, step)]


def array_image(array: Any, tag: str = "image", step: int = 0) -> Image:
    """The :class:`Image` record of an image tensor or array: ``[H, W]``, ``[C, H, W]`` or ``[H, W, C]`` with
    ``C`` = 1, 3 or 4, uint8 or float in [0, 1].

    A ``[C, H, W]`` that could also be ``[H, W, C]`` (``[3, 8, 3]``) is read as each library's convention has it:
    a torch tensor channels first, a NumPy array channels last.
    """
    tensor = is_tensor(array)
    if tensor:
        detached = array.detach()
        image = (detached.float() if detached.is_floating_point() else detached).cpu().numpy()
    else:
        image = np.asarray(array)
    shape = image.shape
    first = image.ndim == 3 and shape[0] in (1, 3, 4)
    last = image.ndim == 3 and shape[2] in (1, 3, 4)
    if image.ndim == 3 and first and (tensor or not last):
        image = np.moveaxis(image, 0, -1)
    elif not (image.ndim == 2 or last):
        raise BadInputError(
            f"{tag!r}: run.log stores a {type(array).__name__} of more than one element as an image, [H, W], "
            f"[C, H, W] or [H, W, C] with C = 1, 3 or 4 channels; this one has shape {list(shape)}. Reduce it to "
            "one number (.mean(), .norm()) to log a scalar; log one image of a batch (x[0]) or a grid of them "
            "(torchvision.utils.make_grid)"
        )
    return Image(tag, step, image)


@loggable(
    ("deepscope.features.filters", "Filters"),
    ("deepscope.features.patches", "TopPatches"),
    ("deepscope.features.maximize", "Maximization"),
    description="Filters, TopPatches, Maximization (their to_records)",
)
def _feature_pictures(value: Any, tag: str, step: int) -> list[Any]:
    return list(value.to_records(tag, step))
