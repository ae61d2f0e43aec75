"""What a heat map is made of, in words for people. Plain strings, no torch: the Classify and Evaluate pages and the
report import it without loading the CAM machinery (the grad-cam library and OpenCV take seconds to import)."""

from __future__ import annotations


def describe_layer(layer: str, map_size: tuple[int, int] | None, image_size: int | None = None) -> str:
    """One line for people: which part of the network the heat map comes from and how coarse it is."""
    # The layer's own name ("layer3.1") means nothing to the audience: it stays in predict --json (cam_layer).
    if not map_size:
        return "The heat map comes from one of the network's inner layers, smoothed to the photo's size."
    h, w = map_size
    cell = (f", each cell covering about {image_size // max(h, w)}×{image_size // max(h, w)} px of the "
            f"{image_size} px image the model sees") if image_size else ""  # fmt: skip
    article = "an" if str(h).startswith("8") or h in (11, 18) else "a"
    return (f"The heat map comes from {article} {h}×{w} grid of the network's features{cell}, smoothed to the "
            "photo's size.")  # fmt: skip
