"""Per-image correctness: which test images each seed of a cell classified correctly.

A third file beside the result CSV (``RUN.images.csv`` next to ``RUN.csv``):
one row per cell x seed, the correctness of every test image packed into
bits (10,000 images -> 1,250 bytes, base64 in the ``correct`` column). Two
models scored on the same images can then be compared image by image (a
paired test), which is far stricter than comparing two accuracies whose
sampling errors are treated as independent although they share the test set.

``test_set`` fingerprints the labels in scoring order, so a comparison can
refuse two rows that were scored on different images. The rows of a cell
are written before its result rows, so a result row never lacks them; a
resumed cell leaves an earlier run's rows behind, and readers keep only
the rows whose ``run_id`` is the result row's.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any, Dict, List, Sequence

import numpy as np

IMAGE_SCHEMA_VERSION = 1

_IMAGE_COLUMN_DOCS = [
    ("run_id", "id of the run that wrote the row, as in the result CSV"),
    ("cell_id", "the cell's id, as in the result CSV"),
    ("variant_id", "the architecture's id, as in the result CSV"),
    ("seed", "the training seed"),
    ("test_images", "test images scored (the length of the bit string)"),
    ("test_set", "sha1 of the test labels in scoring order, 12 hex digits: rows with equal values saw the same images"),
    ("correct_images", "correctly classified test images (the number of set bits)"),
    ("correct", "per-image correctness in scoring order, 1 bit per image (numpy packbits, big-endian), base64"),
]
IMAGE_COLUMNS: List[str] = [name for name, _ in _IMAGE_COLUMN_DOCS]
IMAGE_COLUMN_DOCS: Dict[str, str] = dict(_IMAGE_COLUMN_DOCS)
# The key under which a result row carries its per-image rows from the cell to the runner.
IMAGE_ROWS_KEY = "_image_rows"


def images_path(csv_path: str) -> str:
    """``RUN.images.csv`` beside ``RUN.csv``."""
    root = csv_path[:-4] if csv_path.endswith(".csv") else csv_path
    return root + ".images.csv"


def pop_image_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Take the per-image rows off a cell's result rows (the cell puts them on its first row)."""
    return [r for row in rows for r in (row.pop(IMAGE_ROWS_KEY, None) or [])]


def test_set_id(labels: Sequence[int]) -> str:
    """The fingerprint of a test set: its labels in scoring order."""
    data = np.asarray(labels, dtype=np.int64).tobytes()
    return hashlib.sha1(data).hexdigest()[:12]


def encode_bits(correct: Sequence[bool]) -> str:
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def decode_bits(text: str, n: int) -> np.ndarray:
    """The boolean vector of ``n`` images; ValueError for a string that does not hold exactly ``n`` bits."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ValueError("expected base64 text") from None
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"expected {(n + 7) // 8} bytes for {n} images, got {len(raw)}")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    if bits[n:].any():
        raise ValueError("padding bits after the last image are set")
    return bits[:n].astype(bool)


def image_row(seed: int, correct: Sequence[bool], test_set: str) -> Dict[str, Any]:
    """One seed's row (without the run, cell and variant ids, which the runner adds); ``test_set`` is
    :func:`test_set_id` of the labels, the same for every seed of a cell."""
    vector = np.asarray(correct, dtype=bool)
    return {"seed": seed, "test_images": int(vector.size), "test_set": test_set,
            "correct_images": int(vector.sum()), "correct": encode_bits(vector)}


def markdown_table() -> str:
    lines = ["| column | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {doc} |" for name, doc in _IMAGE_COLUMN_DOCS]
    return "\n".join(lines)
