"""What a heat map is made of, in words for people. Plain strings, no torch: the Classify and Evaluate pages and the
report import it without loading the CAM machinery (the grad-cam library and OpenCV take seconds to import)."""

from __future__ import annotations


def describe_layer(layer: str, map_size: tuple[int, int] | None, image_size: int | None = None) -> str:
    """One line for people: which part of the network the heat map comes from and how coarse it is."""
    if not map_size:
        return f"The heat map comes from the network's part named {layer}."
    h, w = map_size
    cell = (f", each cell covering about {image_size // max(h, w)}×{image_size // max(h, w)} px of the "
            f"{image_size} px image the model sees") if image_size else ""  # fmt: skip
    article = "an" if str(h).startswith("8") or h in (11, 18) else "a"
    return (f"The heat map comes from {article} {h}×{w} grid of the network's features (its part named {layer})"
            f"{cell}, smoothed to the photo's size.")  # fmt: skip
