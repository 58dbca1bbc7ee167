"""Data loading, synthetic data, splits and the on-device augmentation pipeline.

The CIFAR-10 tests write a tiny folder in the real format (pickled dicts of
uint8 rows), so the real loading code runs without the 180 MB dataset.
"""
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.train import augment, data
from bench.errors import UserError
from bench.train.recipe import resolve

TRAIN_PER_BATCH = 40  # 5 batches -> 200 training images
N_TEST = 60


def _rows(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), [int(x) for x in rng.integers(0, 10, size=n)]


def write_cifar(root, bytes_keys: bool = False) -> str:
    """A CIFAR-10 folder with 200 training and 60 test images under ``root``."""
    folder = os.path.join(str(root), data.CIFAR_FOLDER)
    os.makedirs(folder)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    files = [(f"data_batch_{i + 1}", TRAIN_PER_BATCH, i) for i in range(5)] + [("test_batch", N_TEST, 99)]
    for name, n, seed in files:
        rows, labels = _rows(n, seed)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({key("data"): rows, key("labels"): labels, key("batch_label"): name}, f, protocol=2)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({key("label_names"): [f"class{i}" for i in range(10)], key("num_vis"): 3072}, f, protocol=2)
    return folder


@pytest.mark.parametrize("bytes_keys", [False, True], ids=["str-keys", "bytes-keys"])
def test_cifar_folder_loads_as_uint8_planes(tmp_path, bytes_keys):
    write_cifar(tmp_path, bytes_keys)
    with pytest.warns(UserWarning, match="differ from the official CIFAR-10 release"):
        train, test = data.load_cifar10(str(tmp_path), download=False)
    assert train.images.shape == (200, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (N_TEST, 3, 32, 32) and train.labels.dtype == torch.int64
    rows, labels = _rows(TRAIN_PER_BATCH, 1)  # data_batch_2 comes second
    image = train.images[TRAIN_PER_BATCH + 3]
    # a row is 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    assert torch.equal(image[0, 0], torch.from_numpy(rows[3, :32]))
    assert torch.equal(image[1, 5], torch.from_numpy(rows[3, 1024 + 5 * 32:1024 + 6 * 32]))
    assert torch.equal(image[2, 31], torch.from_numpy(rows[3, 3072 - 32:]))
    assert train.labels[TRAIN_PER_BATCH:2 * TRAIN_PER_BATCH].tolist() == labels


def test_loader_agrees_with_torchvision_pixel_for_pixel(tmp_path, monkeypatch):
    """Independent reference: torchvision's own CIFAR10 reader (its md5 check bypassed for the tiny copy)."""
    import torchvision.datasets.cifar as tv_cifar

    write_cifar(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, test = data.load_cifar10(str(tmp_path), download=False)
    for split, ours in (("train", train), ("test", test)):
        ref = tv_cifar.CIFAR10(str(tmp_path), train=split == "train", download=False)
        assert torch.equal(ours.images.permute(0, 2, 3, 1), torch.from_numpy(ref.data))  # torchvision keeps HWC
        assert ours.labels.tolist() == list(ref.targets)


def test_missing_folder_offline_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as info:
        data.load_cifar10(str(tmp_path / "nowhere"), download=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"place the extracted cifar-10-batches-py folder under {tmp_path / 'nowhere'}" in message


def test_missing_folder_without_network_fails_fast(tmp_path, monkeypatch):
    # Port 9 (discard) on the loopback refuses the connection: the real probe runs and fails.
    monkeypatch.setattr(data, "ARCHIVE_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(UserError, match=r"offline .*place the extracted cifar-10-batches-py folder"):
        data.load_cifar10(str(tmp_path), download=True)
    assert not os.path.exists(tmp_path / data.CIFAR_FOLDER)


def test_incomplete_and_malformed_folders_name_the_problem(tmp_path):
    folder = write_cifar(tmp_path / "a")
    os.remove(os.path.join(folder, "data_batch_3"))
    with pytest.raises(UserError, match="missing data_batch_3"):
        data.load_cifar10(str(tmp_path / "a"))
    folder = write_cifar(tmp_path / "b")
    with open(os.path.join(folder, "test_batch"), "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), dtype=np.uint8), "labels": [0] * 4}, f)
    with pytest.raises(UserError, match=r"test_batch: data: expected N rows of 3072 uint8"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.load_cifar10(str(tmp_path / "b"))


def test_synthetic_is_deterministic_balanced_and_learnable():
    a, b = data.synthetic_split(600, 5), data.synthetic_split(600, 5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, data.synthetic_split(600, 6).images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (600, 3, 32, 32)
    assert torch.bincount(a.labels, minlength=10).min() > 30
    # mean colour alone, nearest class centroid: well above chance (10%), far from perfect
    test = data.synthetic_split(400, 7)
    feats = lambda s: s.images.float().mean((2, 3))  # noqa: E731
    centroids = torch.stack([feats(a)[a.labels == c].mean(0) for c in range(10)])
    acc = (torch.cdist(feats(test), centroids).argmin(1) == test.labels).float().mean().item()
    assert 0.35 < acc < 0.9


def test_splits_are_seeded_disjoint_and_labelled(tmp_path):
    write_cifar(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = data.prepare_data(resolve({"data_root": str(tmp_path)}))
        sub = data.prepare_data(resolve({"data_root": str(tmp_path), "train_subset": 120, "test_subset": 30,
                                         "val_size": 20}))
        again = data.prepare_data(resolve({"data_root": str(tmp_path), "train_subset": 120, "test_subset": 30,
                                           "val_size": 20}))
        other = data.prepare_data(resolve({"data_root": str(tmp_path), "train_subset": 120, "seed": 1}))
    assert full.label == "cifar10-subset-200-test-60"  # the tiny folder is not the 50,000/10,000 release
    assert len(full.train) == 200 and len(full.test) == N_TEST and full.val is None
    assert sub.label == "cifar10-subset-100-test-30"
    assert (len(sub.train), len(sub.val), len(sub.test)) == (100, 20, 30)
    assert torch.equal(sub.train.images, again.train.images) and torch.equal(sub.test.images, again.test.images)
    assert not torch.equal(sub.train.images[:100], other.train.images[:100])
    # validation images come from the training set and are not trained on
    keys = lambda s: {bytes(img.numpy().tobytes()) for img in s.images}  # noqa: E731
    assert keys(sub.val) <= keys(full.train) and not keys(sub.val) & keys(sub.train)
    assert keys(sub.test) <= keys(full.test)
    syn = data.prepare_data(resolve({"dataset": "synthetic", "train_subset": 50, "test_subset": 40}))
    assert syn.label == "synthetic" and (len(syn.train), len(syn.test)) == (50, 40)


def test_val_size_larger_than_training_set_is_a_user_error(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(UserError, match="val_size: expected fewer than the 200 training images"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.prepare_data(resolve({"data_root": str(tmp_path), "val_size": 500}))


# --------------------------------------------------------------- augmentation
def _images(n=64, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _shift_of(original: torch.Tensor, moved: torch.Tensor, p: int):
    """Reference: which (dy, dx) crop of the zero-padded image gives ``moved`` (None if none does)."""
    padded = F.pad(original, (p, p, p, p))
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            if torch.equal(padded[:, dy:dy + 32, dx:dx + 32], moved):
                return dy - p, dx - p
    return None


def test_translate_is_a_random_padded_crop():
    x = _images()
    out = augment.random_translate(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    shifts = [_shift_of(x[i], out[i], 4) for i in range(len(x))]
    assert None not in shifts
    assert len(set(shifts)) > 20  # many different translations, not one
    assert all(max(abs(dy), abs(dx)) <= 4 for dy, dx in shifts)
    assert torch.equal(augment.random_translate(x, 0, torch.Generator()), x)


def test_flip_mirrors_about_half_the_images():
    x = _images()
    out = augment.random_flip(x, torch.Generator().manual_seed(0))
    same = [torch.equal(out[i], x[i]) for i in range(len(x))]
    mirrored = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 16 < sum(mirrored) < 48


def test_augmentation_is_deterministic_under_a_seed():
    x = _images()

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return augment.random_flip(augment.random_translate(x, 4, g), g)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_normalisation_matches_the_usual_formula_and_resize_changes_size():
    x = _images(8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    scale, shift = augment.normalization(mean, std)
    got = augment.normalize(x, scale, shift)
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    big = augment.resize(got, 64)
    assert big.shape == (8, 3, 64, 64)
    flat = augment.resize(torch.full((1, 3, 32, 32), 0.25), 224)
    torch.testing.assert_close(flat, torch.full((1, 3, 224, 224), 0.25))
    assert augment.resize(got, None) is got


def test_pipeline_epoch_is_a_permutation_and_eval_sees_everything_in_order():
    x = _images(100)
    labels = torch.arange(100)
    mean_std = dict(mean=(0.5,) * 3, std=(0.5,) * 3)
    train = augment.BatchPipeline(x, labels, 32, train=True, generator=torch.Generator().manual_seed(0),
                                  crop_padding=2, flip=True, memory_format=torch.channels_last, **mean_std)
    seen = []
    for xb, yb in train:
        assert xb.shape == (32, 3, 32, 32) and xb.dtype == torch.float32
        assert xb.is_contiguous(memory_format=torch.channels_last)
        seen += yb.tolist()
    assert train.steps_per_epoch == 3 and len(seen) == 96 and len(set(seen)) == 96  # last partial batch dropped
    assert seen != sorted(seen)
    evaluation = augment.BatchPipeline(x, labels, 32, train=False, size=48, **mean_std)
    batches = list(evaluation)
    assert [len(b[1]) for b in batches] == [32, 32, 32, 4]
    assert torch.cat([b[1] for b in batches]).tolist() == list(range(100))
    assert batches[0][0].shape == (32, 3, 48, 48)


# ------------------------------------------------------ untrusted batch files
class _Reduced:
    """Pickles as ``func(*args)`` then ``__setstate__(state)``: how a crafted file calls allow-listed globals."""

    def __init__(self, func, args, state):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return self.func, self.args, self.state


def _forged_object_labels(n: int) -> "_Reduced":
    """An object-dtype array whose dtype flags say it holds no objects, filled with raw bytes: every
    global it names (numpy.dtype, ndarray, _reconstruct, _codecs.encode) is on the loader's allow list."""
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, whichever module numpy 1 or 2 keeps it in
    no_flags_object = _Reduced(np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 0))
    pointers = (0x4141414141414141).to_bytes(8, "little") * n  # not addresses of anything
    return _Reduced(reconstruct, (np.ndarray, (0,), b"b"), (1, (n,), no_flags_object, False, pointers))


def _write_batch(folder: str, name: str, content, protocol: int = 2) -> None:
    with open(os.path.join(folder, name), "wb") as f:
        pickle.dump(content, f, protocol=protocol)


def test_a_crafted_batch_with_a_forged_object_dtype_is_a_one_line_error_not_a_crash(tmp_path):
    """Before the fix preflight read labels.min() through the forged pointers and died with SIGSEGV."""
    import subprocess
    import sys

    folder = write_cifar(tmp_path / "data")
    _write_batch(folder, "test_batch", {"data": np.zeros((4, 3072), np.uint8), "labels": _forged_object_labels(4)})
    # every global the file names is on the loader's allow list: the unpickler lets it all through
    assert _globals_named(os.path.join(folder, "test_batch")) <= data._PICKLE_GLOBALS
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ndefaults: {device: cpu, batch_sizes: [1], warmup: 0, repeats: 1,\n"
                    "  train: {dataset: cifar10, epochs: 1, download: false}}\ninclude:\n  - {preset: resnet20}\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmark.py"), "--grid", str(grid), "--data-root",
                           str(tmp_path / "data"), "--out", str(tmp_path / "o.csv"), "--no-report", "--no-progress"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "test_batch: labels: expected 4 integers in 0..9, got a |O array" in error[0]
    assert not os.path.exists(tmp_path / "o.csv")


def _globals_named(path: str):
    import pickletools

    with open(path, "rb") as f:
        return {tuple(arg.split(" ", 1)) for op, arg, _ in pickletools.genops(f.read()) if op.name == "GLOBAL"}


@pytest.mark.parametrize("labels,data_rows", [
    (np.zeros(4, dtype=object), np.zeros((4, 3072), np.uint8)),         # a plain object array
    (np.zeros(4, dtype=np.float64), np.zeros((4, 3072), np.uint8)),     # floats are not labels
    ([0, 1, True, 3], np.zeros((4, 3072), np.uint8)),                   # a bool in the list
    ([0, 1, 2, 3], np.zeros((4, 3072), np.int16)),                      # data wider than a byte
    ([0, 1, 2, 3], np.zeros((4, 3072), dtype=[("a", np.uint8)])),       # a structured dtype
    ([0, 1, 2, 3], np.zeros((4, 3072), object)),                        # object pixels
], ids=["object-labels", "float-labels", "bool-label", "int16-data", "structured-data", "object-data"])
def test_batches_of_any_other_dtype_are_refused_naming_the_field(tmp_path, labels, data_rows):
    folder = str(tmp_path)
    _write_batch(folder, "b", {"data": data_rows, "labels": labels})
    field = "data" if isinstance(labels, list) and labels[2] is not True else "labels"
    with pytest.raises(UserError, match=rf"b: {field}: expected"):
        data.read_batch(os.path.join(folder, "b"))


def test_integer_label_arrays_of_any_width_load(tmp_path):
    _write_batch(str(tmp_path), "b", {"data": np.zeros((3, 3072), np.uint8), "labels": np.array([0, 9, 4], np.uint8)})
    assert data.read_batch(str(tmp_path / "b")).labels.tolist() == [0, 9, 4]


# ------------------------------------------------------ what the label says
def _small_folder(root, train_per_batch: int, test: int) -> str:
    folder = os.path.join(str(root), data.CIFAR_FOLDER)
    os.makedirs(folder)
    for name, n in [(f"data_batch_{i + 1}", train_per_batch) for i in range(5)] + [("test_batch", test)]:
        rows, labels = _rows(n, 3)
        _write_batch(folder, name, {"data": rows, "labels": labels}, protocol=4)  # protocol 2 spells b'' as a call
    return folder


def test_an_undersized_folder_is_labelled_by_the_images_it_holds(tmp_path):
    _small_folder(tmp_path, 20, 20)  # 100 training and 20 test images, no subset asked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert data.prepare_data(resolve({"data_root": str(tmp_path)})).label == "cifar10-subset-100-test-20"
        assert data.prepare_data(resolve({"data_root": str(tmp_path), "val_size": 10})).label == \
            "cifar10-subset-90-test-20"
    assert data.cifar_label(50000, 10000) == "cifar10" and data.cifar_label(45000, 10000) == "cifar10-subset-45000"


@pytest.mark.parametrize("train_per_batch,test,split", [(0, 20, "training"), (20, 0, "test")])
def test_a_folder_without_images_fails_in_preflight(tmp_path, train_per_batch, test, split):
    _small_folder(tmp_path, train_per_batch, test)
    with pytest.raises(UserError, match=rf"g.yaml: train: .*cifar-10-batches-py holds no {split} images"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.preflight([resolve({"data_root": str(tmp_path)})], "g.yaml: train")
