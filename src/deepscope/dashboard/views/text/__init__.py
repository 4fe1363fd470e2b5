"""Text: the notes logged under each text tag."""

from __future__ import annotations

from .. import View, kinds_of

VIEW = View(name="text", title="Text", order=80, kinds=kinds_of("text"))
