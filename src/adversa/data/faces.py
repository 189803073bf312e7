"""`faces`: face versus non-face, from scikit-image's bundled `lfw_subset` (the built-in
data set "faces").

`skimage.data.lfw_subset()` ships 200 grey 25x25 crops: 100 faces from Labeled Faces in the
Wild (Huang et al. 2007) and 100 non-face crops of natural images, in that order. Here they
are a two-class set, label 0 "face" and 1 "non-face", as (N, 1, 25, 25) float32 in [0, 1]; a
classifier trained on it is a small face detector, the victim of the eyeglass-frame dodging
attack of Sharif et al. (2016, "Accessorize to a Crime", CCS). With 200 images the split
(stratified, seeded like every built-in) is 160 train / 40 test.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from adversa.data.dataset import Dataset
from adversa.data.splits import select, split_meta

FACE_CLASSES: tuple[str, ...] = ("face", "non-face")
SOURCE = "skimage.data.lfw_subset (100 LFW faces, 100 non-face crops, 25x25 grey)"


@functools.cache
def faces_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(x, y): all 200 images (200, 1, 25, 25) float32 and labels (0 face, 1 non-face)."""
    import skimage.data

    images = np.asarray(skimage.data.lfw_subset(), dtype=np.float32)
    x = np.clip(images, 0.0, 1.0)[:, None]
    y = np.repeat(np.arange(2, dtype=np.int64), images.shape[0] // 2)
    return x, y


def load_faces(split: str) -> Dataset:
    """The "faces" built-in: `split` is "train", "test" or "all" (stratified, seeded)."""
    x, y = faces_arrays()
    xs, ys = select(x, y, split)
    return Dataset(
        name="faces",
        x=torch.tensor(xs),
        y=torch.tensor(ys),
        num_classes=2,
        kind="image",
        class_names=FACE_CLASSES,
        meta=split_meta(SOURCE, split, len(y)),
    )
