"""Classify (planned): drag-and-drop photos, top-5 with probabilities, Grad-CAM heat maps."""

from ui.common import placeholder

placeholder("Classify", "issue 6", [
    "Drop one photo or many: top-5 classes with probabilities and the time taken.",
    "Grad-CAM and other CAM methods: a heat map of where the model looked, over the photo.",
    "A batch gallery with a downloadable CSV; the same model behind an HTTP endpoint.",
])  # fmt: skip
