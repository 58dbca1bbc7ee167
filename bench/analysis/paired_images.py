"""Paired accuracy tests over the test images two models both saw, and the trend test over an ordered setting.

Two accuracies measured on the same 10,000 images are not independent: most
images are easy for both models, and the test set's sampling error is shared.
Comparing them image by image removes that shared error, so it is both
stricter and more sensitive than comparing two means. The data is
``RUN.images.csv`` beside ``RUN.csv`` (:mod:`bench.results.image_schema`).

* :func:`load_images`: one :class:`ImageRecord` (seeds x images) per result cell;
* :func:`paired_test`: a paired bootstrap over images (and over each side's
  seeds where it has more than one) for the interval, and its p; McNemar's
  exact test for the p when each side has a single seed;
* :func:`resampled_mean` and :func:`bootstrap_p`: the pieces
  :mod:`bench.analysis.trend` reuses for the trend over an ordered setting.

Rows whose ``test_set`` fingerprints differ are never paired (ValueError).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from bench.errors import UserError
from bench.results.files import read_lines
from bench.results.image_schema import decode_bits, images_path

N_BOOT = 10_000  # resamples: the smallest p a paired bootstrap can give is 2 / (N_BOOT + 1)
LEVEL = 0.95
_CHUNK = 250  # resamples drawn at once: 250 x 10,000 image weights is 10 MB
_REQUIRED = ("run_id", "cell_id", "seed", "test_images", "test_set", "correct_images", "correct")

CellKey = Tuple[str, str]  # (run_id, cell_id)


@dataclass(frozen=True)
class ImageRecord:
    """One cell's per-image correctness: ``correct[s, i]`` is seed ``seeds[s]`` on test image i."""

    test_set: str
    seeds: Tuple[int, ...]
    correct: np.ndarray  # bool, (seeds, images)

    @property
    def images(self) -> int:
        return int(self.correct.shape[1])

    @property
    def seed_accuracies(self) -> Tuple[float, ...]:
        return tuple(float(a) for a in self.correct.mean(axis=1))


def load_images(csv_path: str, cells: Sequence[CellKey]) -> Dict[CellKey, ImageRecord]:
    """The per-image records of ``cells`` from ``RUN.images.csv`` beside ``csv_path`` (no file: none).

    Only rows whose (run_id, cell_id) is one of ``cells`` are kept: a resumed run leaves an earlier run's
    rows behind. :class:`UserError` naming the file, line and field for a row that does not parse, a seed
    given twice, or seeds of one cell scored on different test sets."""
    path = images_path(csv_path)
    if not os.path.isfile(path):
        return {}
    parsed = read_lines(path, required=_REQUIRED)
    if parsed is None:
        return {}
    wanted, col = set(cells), parsed.index
    found: Dict[CellKey, Dict[int, Tuple[str, np.ndarray]]] = {}
    for line in parsed.lines:
        key = (line.get(col, "run_id"), line.get(col, "cell_id"))
        if key not in wanted:
            continue
        seed, bits, test_set = _parse_row(path, line, col)
        seeds = found.setdefault(key, {})
        if seed in seeds:
            raise UserError(f"{path}: line {line.number}: seed {seed} of cell {key[1]} (run {key[0]}) given twice")
        if seeds and next(iter(seeds.values()))[0] != test_set:
            raise UserError(f"{path}: line {line.number}: test_set {test_set} differs from the cell's other seeds "
                            "(expected every seed of a cell scored on the same images)")
        seeds[seed] = (test_set, bits)
    out = {}
    for key, seeds in found.items():
        order = sorted(seeds)
        sizes = {seeds[s][1].size for s in order}
        if len(sizes) > 1:
            raise UserError(f"{path}: cell {key[1]}: seeds scored on different numbers of images {sorted(sizes)}")
        out[key] = ImageRecord(seeds[order[0]][0], tuple(order), np.stack([seeds[s][1] for s in order]))
    return out


def _parse_row(path: str, line, col: Mapping[str, int]) -> Tuple[int, np.ndarray, str]:
    def field(name: str) -> str:
        return line.get(col, name).strip()

    where = f"{path}: line {line.number}"
    try:
        seed, images, correct_images = int(field("seed")), int(field("test_images")), int(field("correct_images"))
    except ValueError:
        raise UserError(f"{where}: seed, test_images and correct_images must be whole numbers") from None
    if images < 1:
        raise UserError(f"{where}: test_images: expected a positive count, got {images}")
    try:
        bits = decode_bits(field("correct"), images)
    except ValueError as e:
        raise UserError(f"{where}: correct: {e}") from None
    if int(bits.sum()) != correct_images:
        raise UserError(f"{where}: correct_images {correct_images} but the bits hold {int(bits.sum())} correct images")
    test_set = field("test_set")
    if not test_set:
        raise UserError(f"{where}: test_set: expected the labels' fingerprint, got nothing")
    return seed, bits, test_set


# --------------------------------------------------------------------------- the paired test
@dataclass(frozen=True)
class PairedResult:
    """``second`` minus ``first``, image by image: difference, interval, p and how they were computed."""

    name: str  # "paired bootstrap" or "McNemar exact"
    difference: float  # mean accuracy difference, fraction
    low: float  # LEVEL interval of the difference (bootstrap percentiles)
    high: float
    p_value: float
    detail: str
    seeds_ahead: Optional[Tuple[int, int]]  # (seeds where second beat first, seeds matched by seed number)
    p_floor: float = 0.0  # the smallest p the test can give (a bootstrap's: 2 / (resamples + 1))


def paired_test(first: ImageRecord, second: ImageRecord, n_boot: int = N_BOOT, level: float = LEVEL,
                seed: int = 0, totals: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> PairedResult:
    """Accuracy of ``second`` minus ``first`` on the images both saw.

    The interval: a percentile bootstrap that resamples the test images (the same images for both
    models, so what they share cancels) and, independently per model, its seeds where it has more
    than one (scaled so that the noise both levels carry counts once, see :func:`seed_scale`). Its p is
    the interval's inversion: twice the share of resampled differences on the far side of 0, with the
    +1 correction (so never below 2 / (n_boot + 1)). With one seed per side the p is McNemar's exact
    test instead: the images exactly one model got right split, under 'no difference', as
    Binomial(discordant, 1/2) (``scipy.stats.binomtest``). ``totals``: the two records'
    :func:`image_totals`, when a family computes them once for all its records.
    ValueError when the two were scored on different test sets (their images cannot be paired)."""
    if first.test_set != second.test_set or first.images != second.images:
        raise ValueError(f"refusing to pair accuracies scored on different test sets ({first.test_set}, "
                         f"{first.images} images vs {second.test_set}, {second.images} images)")
    t_a, t_b = totals if totals is not None else image_totals([first, second], n_boot, seed)
    rng = np.random.default_rng(seed + 1)
    diffs = (resampled_mean(t_b, rng, seed_scale(second)) - resampled_mean(t_a, rng, seed_scale(first))) \
        / first.images
    tail = (1 - level) / 2
    low, high = (float(q) for q in np.quantile(diffs, [tail, 1 - tail]))
    difference = float(second.correct.mean() - first.correct.mean())
    n_boot = len(diffs)
    if first.correct.shape[0] == 1 and second.correct.shape[0] == 1:
        p, counts = _mcnemar(first.correct[0], second.correct[0])
        return PairedResult("McNemar exact", difference, low, high, p,
                            f"{first.images:,} images x 1 seed, {counts}; interval: paired bootstrap over "
                            f"images, {n_boot:,} resamples", _ahead(first, second))
    return PairedResult("paired bootstrap", difference, low, high, bootstrap_p(diffs),
                        f"{first.images:,} images x {_seeds_text(first, second)} seeds, {n_boot:,} resamples",
                        _ahead(first, second), bootstrap_floor(n_boot))


def image_totals(records: Sequence[ImageRecord], n_boot: int = N_BOOT, seed: int = 0) -> List[np.ndarray]:
    """Per record, (n_boot, seeds) correct counts over the same n_boot resamples of the test images.

    One draw of image weights serves every record of a family (common random numbers), so a family of
    15 pairs costs one resampling, not 15. The records must share their number of images."""
    images = records[0].images
    stacked = np.concatenate([r.correct for r in records]).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, stacked.shape[0]))
    for start in range(0, n_boot, _CHUNK):
        k = min(_CHUNK, n_boot - start)
        draws = rng.integers(0, images, size=(k, images)) + images * np.arange(k)[:, None]
        weights = np.bincount(draws.ravel(), minlength=k * images).reshape(k, images).astype(np.float32)
        out[start:start + k] = weights @ stacked.T
    bounds = np.cumsum([0] + [r.correct.shape[0] for r in records])
    return [out[:, lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def bootstrap_floor(draws: int) -> float:
    """The smallest p :func:`bootstrap_p` gives from ``draws`` resamples: a p there means 'at most this'."""
    return 2 / (draws + 1)


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided p of 'the statistic is 0' by inverting a percentile bootstrap: twice the share of draws on
    the far side of 0, with the +1 correction (never below 2 / (draws + 1), never above 1)."""
    return float(min(1.0, 2 * min(np.sum(draws <= 0) + 1, np.sum(draws >= 0) + 1) / (len(draws) + 1)))


def resampled_mean(totals: np.ndarray, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Mean over a bootstrap draw of the seeds (columns) of each resample's per-seed totals (rows), the
    draw's deviation from the seeds' mean multiplied by ``scale`` (:func:`seed_scale`)."""
    seeds = totals.shape[1]
    if seeds == 1:
        return totals[:, 0].astype(float)
    pick = rng.integers(0, seeds, size=totals.shape)
    centre = totals.mean(axis=1)
    drawn = np.take_along_axis(totals, pick, axis=1).mean(axis=1)
    return centre + scale * (drawn - centre)


def seed_scale(record: ImageRecord) -> float:
    """How much of the seeds' spread the seed draw must add, beside the images' resampling.

    Seeds and images are crossed: correctness = seed effect + image effect + noise. Resampling the
    images already carries the noise, and the seeds' accuracies carry it again (each seed's accuracy
    is noisy by about noise / images), so drawing both would count it twice: the interval covered
    99.5% instead of 95% in simulation. The seed draw is therefore scaled to the seed effect's variance
    alone, estimated by the two-way analysis of variance (seed variance less residual / images,
    floored at 0), and by sqrt(n / (n - 1)) because a draw of n seeds from n has (n - 1)/n of their
    variance."""
    x = record.correct.astype(float)
    n, images = x.shape
    if n < 2:
        return 1.0
    rows, cols, mean = x.mean(axis=1), x.mean(axis=0), x.mean()
    ss_rows = images * np.sum((rows - mean) ** 2)
    ss_res = x.sum() - n * images * mean ** 2 - ss_rows - n * np.sum((cols - mean) ** 2)
    seed_var = ss_rows / (images * (n - 1))  # sample variance of the seeds' accuracies
    if seed_var <= 0:
        return 0.0
    residual = max(ss_res, 0.0) / ((n - 1) * (images - 1))
    effect = max(seed_var - residual / images, 0.0)
    return math.sqrt(n / (n - 1) * effect / seed_var)


def _mcnemar(a: np.ndarray, b: np.ndarray) -> Tuple[float, str]:
    from scipy.stats import binomtest

    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_b, discordant, 0.5).pvalue)
    return p, f"{only_b} images right only in the second, {only_a} only in the first"


def _seeds_text(first: ImageRecord, second: ImageRecord) -> str:
    n_a, n_b = first.correct.shape[0], second.correct.shape[0]
    return str(n_a) if n_a == n_b else f"{n_a} vs {n_b}"


def _ahead(first: ImageRecord, second: ImageRecord) -> Optional[Tuple[int, int]]:
    common = [s for s in first.seeds if s in second.seeds]
    if not common:
        return None
    acc_a, acc_b = dict(zip(first.seeds, first.seed_accuracies)), dict(zip(second.seeds, second.seed_accuracies))
    return sum(acc_b[s] > acc_a[s] for s in common), len(common)
