"""2-D views of a dataset (PCA and t-SNE of the pixels), as the CIFAR report drew them.

Images are reduced to small RGB thumbnails (16x16 by default) and flattened; PCA shows the main axes of
variation, t-SNE the neighbourhoods. Large datasets are sampled per class first so the picture stays
readable and t-SNE stays interactive (its cost grows faster than linearly).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.common.atomic import write_atomic
from core.common.errors import CoreError, ImageError, check_choice
from core.images.opener import open_image

METHODS = ("pca", "tsne")
DEFAULT_MAX_POINTS = 1500


def sample_per_class(manifest: pd.DataFrame, max_points: int = DEFAULT_MAX_POINTS, seed: int = 0) -> pd.DataFrame:
    """At most ``max_points`` rows, the same share of every class (small classes keep at least one row)."""
    if len(manifest) <= max_points:
        return manifest.reset_index(drop=True)
    share = max_points / len(manifest)
    parts = [
        group.sample(n=max(1, round(len(group) * share)), random_state=seed)
        for _, group in manifest.groupby("label", sort=False)
    ]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def pixel_features(
    root: Path, paths: Sequence[str], size: int = 16, progress: Callable[[int, int], None] | None = None
) -> tuple[np.ndarray, list[bool]]:
    """Flattened ``size`` x ``size`` RGB pixels in [0, 1] per image, and which images could be read.

    Unreadable images get a row of zeros and ``False`` in the mask; callers drop them.
    """
    features = np.zeros((len(paths), size * size * 3), dtype=np.float32)
    ok = [False] * len(paths)
    for i, rel in enumerate(paths):
        try:
            im = open_image(root / rel, draft_size=(size * 2, size * 2))
        except ImageError:
            continue
        small = im.resize((size, size), Image.Resampling.BOX)
        features[i] = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
        ok[i] = True
        if progress and (i % 50 == 0 or i == len(paths) - 1):
            progress(i + 1, len(paths))
    return features, ok


def project(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of the rows of ``features`` by PCA or t-SNE.

    Raises:
        CoreError: an unknown method, or fewer than 3 images.
    """
    check_choice("projection", method, METHODS)
    if len(features) < 3:
        raise CoreError(f"a {method.upper()} view needs at least 3 readable images; got {len(features)}")
    from sklearn.decomposition import PCA

    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(features)
    from sklearn.manifold import TSNE

    # PCA to 50 dimensions first: the usual t-SNE recipe, it removes pixel noise and is much faster.
    reduced = PCA(n_components=min(50, *features.shape), random_state=seed).fit_transform(features)
    perplexity = float(min(30.0, (len(features) - 1) / 3))
    # 500 iterations and a coarser Barnes-Hut angle (0.8): 1,500 digits took 20.5 s with sklearn's defaults and
    # 7.7 s so, with the same clusters; a map to look at, not a measurement.
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed, max_iter=500, angle=0.8)
    return tsne.fit_transform(reduced)


def projection_frame(
    root: Path, sample: pd.DataFrame, method: str = "pca", seed: int = 0, cache_dir: Path | None = None
) -> pd.DataFrame:
    """``sample`` (path, label, ...) with ``x``, ``y`` columns of the projection; unreadable rows dropped.

    With ``cache_dir`` the result is kept on disk, named after the sampled files (path, size, dimensions), the
    method and the seed: the same view in another tab, or after a restart, is read back instead of recomputed.
    """
    cached = _cache_file(root, sample, method, seed, cache_dir)
    if cached is not None and cached.is_file():
        try:
            return pd.read_parquet(cached)
        except (OSError, ValueError):
            pass  # a damaged cache file: compute again
    frame = _projection(root, sample, method, seed)
    if cached is not None:
        write_atomic(cached, lambda fh: frame.to_parquet(fh, index=False), durable=False)
    return frame


def _cache_file(root: Path, sample: pd.DataFrame, method: str, seed: int, cache_dir: Path | None) -> Path | None:
    if cache_dir is None:
        return None
    facts = sample[["path", "bytes", "width", "height"]].astype(str).agg("|".join, axis=1)
    digest = hashlib.sha1("\n".join([str(root), method, str(seed), *facts]).encode()).hexdigest()[:20]
    return cache_dir / "projections" / f"{digest}.parquet"


def _projection(root: Path, sample: pd.DataFrame, method: str, seed: int) -> pd.DataFrame:
    features, ok = pixel_features(root, list(sample["path"]))
    kept = sample[ok].reset_index(drop=True)
    coords = project(features[ok], method, seed)
    return kept.assign(x=coords[:, 0], y=coords[:, 1])
