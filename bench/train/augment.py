"""On-device batch pipeline: random translate, horizontal flip, fused normalisation, resize.

Every operation works on a whole batch at once (one gather, one ``where``),
never image by image in Python, so the input pipeline costs a small fraction
of a training step. The dataset sits on the device as uint8; a batch is an
index slice of a per-epoch permutation, augmented in uint8 (4x less memory
traffic than float) and only then converted, normalised and resized.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F


def random_translate(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by an independent random (dy, dx) in [-padding, padding], zero fill.

    The same as zero-padding by ``padding`` and taking a random crop of the
    original size (torchvision's ``RandomCrop(32, padding=4)``), as one gather.
    """
    if padding <= 0:
        return images
    n, c, h, w = images.shape
    shifts = torch.randint(0, 2 * padding + 1, (2, n), device=images.device, generator=generator)
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = shifts[0][:, None] + torch.arange(h, device=images.device)  # (n, h) rows of the padded image
    cols = shifts[1][:, None] + torch.arange(w, device=images.device)  # (n, w)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def normalization(mean: Sequence[float], std: Sequence[float],
                  device: torch.device | str = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of shape (1, 3, 1, 1) such that ``uint8 * scale + shift == (x / 255 - mean) / std``.

    Made once per pipeline: building small tensors per batch would cost a
    host-to-device copy, and a synchronisation, every step on a GPU.
    """
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, -1, 1, 1)
    return scale.to(device), shift.to(device)


def normalize(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 normalised pixels, one fused multiply-add per element."""
    return torch.addcmul(shift, images.to(torch.float32), scale)


def resize(images: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """Bilinear up- or down-sampling to ``size`` x ``size`` (None or the current size: unchanged)."""
    if size is None or (images.shape[-2], images.shape[-1]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


class BatchPipeline:
    """Batches of a split that already lives on the device.

    ``train=True``: a fresh seeded permutation per epoch, the last partial
    batch dropped (every step sees the same batch shape), augmentation on.
    ``train=False``: the split in order, every image once, no augmentation.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 mean: Sequence[float], std: Sequence[float], crop_padding: int = 0, flip: bool = False,
                 size: Optional[int] = None, train: bool = True, generator: Optional[torch.Generator] = None,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        if train and generator is None:
            raise ValueError("a training pipeline needs a generator (its randomness must be seeded)")
        self.images, self.labels = images, labels
        self.batch_size = min(batch_size, len(labels)) if train else batch_size
        self.scale, self.shift = normalization(mean, std, images.device)
        self.crop_padding, self.flip, self.size = crop_padding, flip, size
        self.train, self.generator, self.memory_format = train, generator, memory_format

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, device=self.images.device, generator=self.generator)
        for i in range(self.steps_per_epoch):
            if self.train:
                index = order[i * self.batch_size:(i + 1) * self.batch_size]
                yield self.transform(self.images[index]), self.labels[index]
            else:
                part = slice(i * self.batch_size, (i + 1) * self.batch_size)
                yield self.transform(self.images[part]), self.labels[part]

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> the float batch the model sees (augmented when training)."""
        if self.train:
            images = random_translate(images, self.crop_padding, self.generator)
            if self.flip:
                images = random_flip(images, self.generator)
        images = resize(normalize(images, self.scale, self.shift), self.size)
        return images.contiguous(memory_format=self.memory_format)
