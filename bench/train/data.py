"""Training data as uint8 tensors: CIFAR-10 from its pickled batches, or a procedural stand-in.

Images are ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64, ready to be
moved to the device once; augmentation and normalisation happen there
(:mod:`bench.train.augment`). CIFAR-10 is read from the standard
``cifar-10-batches-py`` folder directly, so a re-encoded copy whose bytes
differ from the official release still loads (with a warning).
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import socket
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlparse

import numpy as np
import torch

from bench.errors import UserError, one_line
from bench.train.recipe import TrainConfig

NUM_CLASSES = 10
CIFAR_FOLDER = "cifar-10-batches-py"
# The official release (the checksums torchvision uses).
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_FILES: Dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
}
TEST_FILES: Dict[str, str] = {"test_batch": "40351d587109b95175f43aff81a1287e"}
# The release's sizes: only a run on all of them is labelled plain `cifar10` (see prepare_data).
CIFAR_TRAIN_IMAGES = 50000
CIFAR_TEST_IMAGES = 10000
ONLINE_PROBE_TIMEOUT_S = 3.0  # an offline machine must fail fast, not hang on the download

# Synthetic stand-in: fixed sizes when no subset is asked for, and a fixed data
# seed so that, like CIFAR-10, it is one dataset whatever the training seed.
SYNTHETIC_TRAIN = 10000
SYNTHETIC_TEST = 2000
SYNTHETIC_DATA_SEED = 20240601
# The test subset is drawn with this seed, never the training seed: cells that differ only in
# `seed` must be scored on the same test images, or their accuracies are not comparable.
TEST_SUBSET_SEED = 20240602

# What a CIFAR-10 batch pickle may refer to: the numpy pieces an array is rebuilt from (numpy 1
# and 2 spell the module differently) and the codec call that rebuilds bytes. Nothing else is
# importable, so a crafted file in an untrusted data folder cannot run code.
_PICKLE_GLOBALS = {
    (module, name)
    for prefix in ("numpy.core", "numpy._core")
    for module, name in ((f"{prefix}.multiarray", "_reconstruct"), (f"{prefix}.multiarray", "scalar"),
                         (f"{prefix}.numeric", "_frombuffer"))
} | {("numpy", "ndarray"), ("numpy", "dtype"),
     ("_codecs", "encode")}  # how a protocol-2 pickle written by Python 3 spells a bytes object


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR-10 batch never does")


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class TrainingData:
    train: Split
    val: Optional[Split]
    test: Split
    label: str  # the `dataset` column: cifar10[-subset-N][-test-M] or synthetic


# ------------------------------------------------------------------- CIFAR-10
def read_batch(path: str) -> Split:
    """One pickled CIFAR-10 batch; dict keys may be str or bytes (Python 2 pickles).

    Any failure, whatever a corrupt file makes the unpickler raise (MemoryError
    and OverflowError included), is a :class:`UserError` naming the file.
    """
    try:
        return _read_batch(path)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt file can make pickle raise almost anything
        raise UserError(f"{path}: cannot read a CIFAR-10 batch ({type(e).__name__}: {one_line(e, 200)}); "
                        f"replace the file with one from the official release") from None


def _read_batch(path: str) -> Split:
    with open(path, "rb") as f:
        raw = _BatchUnpickler(f, encoding="latin1").load()
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a pickled dict with 'data' and 'labels', got {type(raw).__name__}")
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in raw.items()}
    if "data" not in batch or "labels" not in batch:
        raise UserError(f"{path}: expected keys 'data' and 'labels', found {sorted(map(str, batch))}")
    data, labels = _plain_array(batch["data"], "u", 1), _labels(batch["labels"])
    if data is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: data: expected N rows of 3072 uint8 values, got {_described(batch['data'])}")
    if labels is None or labels.shape != (data.shape[0],) or (
            labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES)):
        raise UserError(f"{path}: labels: expected {data.shape[0]} integers in 0..{NUM_CLASSES - 1}, "
                        f"got {_described(batch['labels'])}")
    images = torch.from_numpy(data.copy()).reshape(-1, 3, 32, 32)  # rows are R, G, B planes of 32x32
    return Split(images, torch.from_numpy(labels))


def _plain_array(value: Any, kinds: str, itemsize: int = 0) -> Optional[np.ndarray]:
    """``value`` when it is a plain ndarray of a numeric dtype of one of ``kinds``, else None.

    The allow-listed numpy globals can still rebuild a dtype with forged flags (an object dtype
    claiming to hold no objects, filled from raw bytes): reading it dereferences those bytes as
    pointers. So the dtype must equal, flags included, the built-in one its type string names.
    """
    if type(value) is not np.ndarray:  # noqa: E721 - a subclass could override what is read
        return None
    dtype = value.dtype
    if dtype.kind not in kinds or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        return None
    builtin = np.dtype(dtype.str)
    if dtype != builtin or dtype.flags != builtin.flags or dtype.itemsize != builtin.itemsize:
        return None
    return value if not itemsize or dtype.itemsize == itemsize else None


def _labels(value: Any) -> Optional[np.ndarray]:
    """The labels as int64: a list of Python ints (the official files) or a plain integer array."""
    if isinstance(value, list):
        if not all(type(x) is int for x in value):  # noqa: E721 - no bools, no numpy scalars (forgeable)
            return None
        return np.array(value, dtype=np.int64)  # an int beyond int64 raises OverflowError: a corrupt file
    array = _plain_array(value, "iu")
    return None if array is None else array.astype(np.int64)


def _described(value: Any) -> str:
    """What a batch holds, for a message; never reads the elements (a forged array's are unsafe)."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype.str} array of shape {value.shape}"
    return f"a {type(value).__name__} of {len(value)}" if isinstance(value, list) else type(value).__name__


def _concat(splits: List[Split]) -> Split:
    return Split(torch.cat([s.images for s in splits]), torch.cat([s.labels for s in splits]))


def _md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(folder: str) -> Tuple[Tuple[str, float, int], ...]:
    out = []
    for name in list(TRAIN_FILES) + list(TEST_FILES):
        path = os.path.join(folder, name)
        st = os.stat(path)
        out.append((name, st.st_mtime, st.st_size))
    return tuple(out)


def load_cifar10(root: str, download: bool = True) -> Tuple[Split, Split]:
    """(train, test) from ``root/cifar-10-batches-py``, downloading it first if missing and possible."""
    folder = os.path.join(root, CIFAR_FOLDER)
    if not os.path.isdir(folder):
        _fetch(root, folder, download)
    missing = [n for n in list(TRAIN_FILES) + list(TEST_FILES) if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise UserError(f"{folder}: incomplete CIFAR-10 folder, missing {', '.join(missing)}; "
                        f"place the complete extracted {CIFAR_FOLDER} folder under {root}")
    return _load_folder(os.path.abspath(folder), _fingerprint(folder))


@functools.lru_cache(maxsize=1)
def _load_folder(folder: str, fingerprint: Tuple[Tuple[str, float, int], ...]) -> Tuple[Split, Split]:
    # Cached per folder and file state: a grid's cells share one read (~1 s and 180 MB).
    # The tensors are never modified in place by the harness.
    differ = [n for n, md5 in {**TRAIN_FILES, **TEST_FILES}.items() if _md5(os.path.join(folder, n)) != md5]
    if differ:
        warnings.warn(f"{folder}: {', '.join(differ)} differ from the official CIFAR-10 release (md5); "
                      f"loading them anyway, accuracies may differ slightly from published numbers",
                      stacklevel=3)
    train = _concat([read_batch(os.path.join(folder, n)) for n in TRAIN_FILES])
    test = _concat([read_batch(os.path.join(folder, n)) for n in TEST_FILES])
    return train, test


def _fetch(root: str, folder: str, download: bool) -> None:
    where = (f"place the extracted {CIFAR_FOLDER} folder under {root} "
             f"(from {ARCHIVE_URL}), or pass --data-root DIR")
    if not download:
        raise UserError(f"{folder}: CIFAR-10 not found (download: false); {where}")
    offline = _offline_reason(ARCHIVE_URL)
    if offline:
        raise UserError(f"{folder}: CIFAR-10 not found and the machine is offline ({offline}); {where}")
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        # The archive's md5 is checked before extraction.
        download_and_extract_archive(ARCHIVE_URL, download_root=root, md5=ARCHIVE_MD5)
    except Exception as e:  # noqa: BLE001 - any network or archive failure is the same story for the user
        raise UserError(f"{folder}: CIFAR-10 not found and the download failed ({' '.join(str(e).split())[:200]}); "
                        f"{where}") from None


def _offline_reason(url: str, timeout_s: float = ONLINE_PROBE_TIMEOUT_S) -> Optional[str]:
    """None when ``url``'s host accepts a connection within the timeout, else why not."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: Dict[str, Any] = {}

    def probe() -> None:
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
            result["ok"] = True
        except OSError as e:
            result["error"] = f"{parsed.hostname}:{port}: {e}"

    # A thread bounds the whole probe, name resolution included (getaddrinfo has no timeout).
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 1)
    if result.get("ok"):
        return None
    return result.get("error", f"{parsed.hostname}:{port}: no answer within {timeout_s:g} s")


# ------------------------------------------------------------------ synthetic
@functools.lru_cache(maxsize=4)
def synthetic_split(n: int, seed: int) -> Split:
    """``n`` procedural 32x32 colour images of 10 classes, identical for the same (n, seed).

    Each image is a textured blob on a noisy background. The class sets the
    blob's hue and the orientation and frequency of its stripes; the hue is
    jittered enough that neighbouring classes overlap, so colour alone is an
    imperfect cue and the texture must be learnt too. Position, size, phase,
    background and pixel noise vary per image. Cached: the harness never
    modifies the returned tensors in place.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    c = labels.float()

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, dtype=torch.float32)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    # colour: a point on a cosine palette, hue jittered by ~0.4 of the class spacing
    hue = c / NUM_CLASSES + 0.035 * randn(n)
    phases = torch.tensor([0.0, 1 / 3, 2 / 3], dtype=torch.float32)
    colour = 0.5 + 0.45 * torch.cos(2 * math.pi * (hue[:, None] + phases[None, :]))  # (n, 3)
    # texture: stripes whose orientation and frequency depend on the class
    theta = (c * math.pi / NUM_CLASSES) + 0.12 * randn(n)
    freq = torch.tensor([0.12, 0.22], dtype=torch.float32)[labels % 2] * (1 + 0.1 * randn(n))
    ys, xs = torch.meshgrid(torch.arange(32, dtype=torch.float32), torch.arange(32, dtype=torch.float32),
                            indexing="ij")
    along = xs[None] * torch.cos(theta)[:, None, None] + ys[None] * torch.sin(theta)[:, None, None]
    stripes = torch.sin(2 * math.pi * freq[:, None, None] * along + 2 * math.pi * rand(n)[:, None, None])
    # blob: a soft disc at a random place
    cy, cx = 10 + 12 * rand(n), 10 + 12 * rand(n)
    radius = 9 + 4 * rand(n)
    dist2 = (ys[None] - cy[:, None, None]) ** 2 + (xs[None] - cx[:, None, None]) ** 2
    mask = torch.sigmoid((radius[:, None, None] ** 2 - dist2) / (2 * radius[:, None, None]))
    fg = colour[:, :, None, None] * (0.65 + 0.35 * stripes[:, None])
    # the background carries a faint tint of the class colour: an easy, early cue
    bg = (0.35 + 0.3 * rand(n, 1, 1, 1)) + 0.3 * (colour[:, :, None, None] - 0.5) + 0.05 * randn(n, 3, 1, 1)
    image = mask[:, None] * fg + (1 - mask[:, None]) * bg + 0.1 * randn(n, 3, 32, 32)
    images = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return Split(images.contiguous(), labels.to(torch.int64))


# ----------------------------------------------------------------- splitting
def _subset(split: Split, size: Optional[int], seed: int) -> Split:
    if size is None or size >= len(split):
        return split
    g = torch.Generator().manual_seed(seed)
    return split.take(torch.randperm(len(split), generator=g)[:size])


def prepare_data(config: TrainConfig, source: str = "train settings") -> TrainingData:
    """Train/validation/test splits for a recipe.

    The training subset is drawn with ``config.seed``; the test subset with a
    fixed seed of its own, so every cell and seed is scored on the same images.

    The validation images come out of the training images (after the subset);
    the test set is only ever used for the reported test accuracy.
    """
    if config.dataset == "synthetic":
        train = synthetic_split(config.train_subset or SYNTHETIC_TRAIN, SYNTHETIC_DATA_SEED)
        test = synthetic_split(config.test_subset or SYNTHETIC_TEST, SYNTHETIC_DATA_SEED + 1)
    else:
        full, full_test = load_cifar10(config.data_root, download=config.download)
        check_sizes(config, len(full), len(full_test), source)
        train = _subset(full, config.train_subset, config.seed)
        test = _subset(full_test, config.test_subset, TEST_SUBSET_SEED)
    if config.val_size >= len(train):
        raise UserError(f"{source}: val_size: expected fewer than the {len(train)} training images, "
                        f"got {config.val_size}")
    val = None
    if config.val_size:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed + 104729))
        val, train = train.take(order[:config.val_size]), train.take(order[config.val_size:])
    label = "synthetic" if config.dataset == "synthetic" else cifar_label(len(train), len(test))
    return TrainingData(train, val, test, label)


def cifar_label(train_images: int, test_images: int) -> str:
    """The `dataset` column of a CIFAR-10 run, from the images it used, not from the folder's name.

    ``cifar10`` means all 50,000 training and 10,000 test images. Anything else names its counts,
    whether a subset was asked for or the folder itself holds fewer images (a 100/20-image copy
    gives ``cifar10-subset-100-test-20``): a 20-image accuracy must not look like a full one.
    """
    label = "cifar10" if train_images == CIFAR_TRAIN_IMAGES else f"cifar10-subset-{train_images}"
    return label + (f"-test-{test_images}" if test_images != CIFAR_TEST_IMAGES else "")


def check_sizes(config: TrainConfig, train_images: int, test_images: int, source: str = "train settings") -> None:
    """Refuse an empty folder, and subsets larger than the folder holds (the run would quietly use fewer
    images than it says)."""
    folder = os.path.join(config.data_root, CIFAR_FOLDER)
    for name, asked, held in (("train_subset", config.train_subset, train_images),
                              ("test_subset", config.test_subset, test_images)):
        if not held:
            split = "training" if name == "train_subset" else "test"
            raise UserError(f"{source}: {folder} holds no {split} images; use the complete CIFAR-10 folder")
        if asked is not None and asked > held:
            raise UserError(f"{source}: {name}: asks for {asked} images but {folder} holds only {held}; "
                            f"lower {name} or use the complete CIFAR-10 folder")


def preflight(configs: List[TrainConfig], source: str) -> None:
    """Load (or download) every CIFAR-10 folder the configs use and check their sizes, before any cell runs."""
    for config in configs:
        if config.dataset != "cifar10":
            continue
        train, test = load_cifar10(config.data_root, download=config.download)
        check_sizes(config, len(train), len(test), source)
