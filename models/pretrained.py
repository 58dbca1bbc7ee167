"""Load torchvision's ImageNet weights into a model built from an ImageNet preset.

The ImageNet presets have torchvision's exact ``state_dict`` keys and shapes
(see :mod:`models.resnet`), so torchvision's checkpoint files load into them
directly. Fine-tuning on another task replaces the classifier: the
checkpoint's 1000-way ``fc`` is dropped and the model keeps its own ``fc``,
already sized for ``num_classes``. (Stacking a new ``Linear(2048, n)`` on top
of the 1000-way output, as some tutorials do, fails at the first forward
pass: the 1000 logits are not the 2048-d features.)

Where the weights come from, in order:

1. the torch hub checkpoint folder, ``torch.hub.get_dir()/checkpoints/<file>``
   (the file name is the one torchvision's weights API uses), without any
   network access;
2. otherwise a download through torchvision's weights API, after a quick
   reachability probe so that an offline machine answers in seconds instead
   of hanging. Setting ``BENCH_PRETRAINED_OFFLINE=1`` skips the network
   entirely.

Nothing is copied into the model until the whole checkpoint has been checked
against it, so a wrong file leaves the model exactly as it was.
"""
from __future__ import annotations

import os
import socket
import warnings
from typing import Dict, Optional, Set, Tuple, Union
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn

Mode = Union[bool, str]
OFFLINE_ENV = "BENCH_PRETRAINED_OFFLINE"
# Seconds to wait for the weights server before declaring the machine offline.
PROBE_TIMEOUT_S = 3.0
# Socket timeout while downloading: a stalled transfer fails instead of hanging.
DOWNLOAD_TIMEOUT_S = 60.0
CLASSIFIER = "fc"
_warned: Set[str] = set()


class PretrainedWeightsUnavailable(ValueError):
    """The weights file is not on disk and cannot be downloaded."""


class PretrainedWeightsMismatch(ValueError):
    """The weights file does not fit the model (keys or shapes differ), or is unreadable."""


def weights_for(preset: str):
    """torchvision's default weights enum member for ``preset`` (``ValueError`` if none exist)."""
    from torchvision.models import get_model_weights

    try:
        return get_model_weights(preset).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise ValueError(
            f"pretrained: torchvision has no weights for preset {preset!r}; pretrained weights exist "
            f"for the ImageNet presets (resnet18..152, resnext50_32x4d, resnext101_32x8d, "
            f"resnext101_64x4d, wide_resnet50_2, wide_resnet101_2)"
        ) from None


def weights_name(weights) -> str:
    """E.g. ``ResNeXt50_32X4D_Weights.IMAGENET1K_V2``."""
    return f"{type(weights).__name__}.{weights.name}"


def checkpoint_path(weights) -> str:
    """Where torch hub keeps (and looks for) this weights file."""
    filename = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def apply_pretrained(model: nn.Module, preset: str, mode: Mode, freeze_backbone: bool = False) -> Optional[str]:
    """Load ``preset``'s ImageNet weights into ``model``; returns the weights name or None.

    ``mode``: ``True`` requires the weights (:class:`PretrainedWeightsUnavailable`
    if they are neither on disk nor downloadable); ``'if_available'`` returns
    None and leaves the model randomly initialised (and trainable) when they
    are missing; ``False`` does nothing. ``freeze_backbone`` stops gradients
    to everything but the classifier once the weights are loaded.
    """
    if not (mode is True or mode is False or mode == "if_available"):
        raise ValueError(f"pretrained: expected true, false or if_available, got {mode!r}")
    if mode is False:
        return None
    weights = weights_for(preset)
    try:
        state = load_checkpoint(weights)
    except PretrainedWeightsUnavailable as e:
        if mode == "if_available":
            if str(e) not in _warned:  # a cell builds its model several times: say it once
                _warned.add(str(e))
                warnings.warn(f"{e}; {preset} stays randomly initialised", stacklevel=2)
            return None
        raise
    load_into(model, state, source=checkpoint_path(weights))
    if freeze_backbone:
        freeze_all_but_classifier(model)
    return weights_name(weights)


def load_into(model: nn.Module, state: Dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy a torchvision-style ``state`` into ``model`` after checking all of it.

    The classifier is taken from the checkpoint only when its shape fits the
    model's; otherwise (``num_classes`` != 1000) the model's own freshly
    initialised ``fc`` stays. Every other tensor must match by name and shape.
    """
    target = model.state_dict()
    merged = _merge(target, state, source)
    # Everything is checked: this strict load cannot fail part-way.
    model.load_state_dict(merged, strict=True)


def _merge(target: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor], source: str) -> Dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise PretrainedWeightsMismatch(f"{source}: expected a state_dict (names -> tensors), "
                                        f"got {type(state).__name__}")
    classifier = {k for k in target if k.split(".")[0] == CLASSIFIER}
    keep_own_fc = _classes_differ(target, state)
    merged: Dict[str, torch.Tensor] = {}
    problems = []
    for key, own in target.items():
        if keep_own_fc and key in classifier:
            merged[key] = own
        elif key in state:
            theirs = state[key]
            if tuple(theirs.shape) != tuple(own.shape):
                problems.append(f"{key} has shape {list(theirs.shape)} in the file, {list(own.shape)} in the model")
            merged[key] = theirs
        elif key.endswith("num_batches_tracked"):
            merged[key] = own  # older torchvision checkpoints do not store this counter
        else:
            problems.append(f"{key} is missing from the file")
    unexpected = sorted(k for k in state if k not in target)
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise PretrainedWeightsMismatch(
            f"{source}: does not fit the model ({shown}); the model must have the preset's architecture"
        )
    return merged


def _classes_differ(target: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor]) -> bool:
    """True when the file's classifier has another number of classes but reads the same features.

    That is the fine-tuning case (ImageNet's 1000 classes -> the task's): the
    model's own ``fc`` is kept. Any other classifier difference is a mismatch.
    """
    key = f"{CLASSIFIER}.weight"
    if key not in target or key not in state or state[key].dim() != 2 or target[key].dim() != 2:
        return False
    (theirs_out, theirs_in), (own_out, own_in) = state[key].shape, target[key].shape
    return theirs_out != own_out and theirs_in == own_in


def freeze_all_but_classifier(model: nn.Module) -> None:
    """``requires_grad=False`` on every parameter outside the classifier.

    BatchNorm running statistics still update in train mode; keeping them
    fixed too is the training loop's choice (``model.eval()`` on the backbone).
    """
    for name, param in model.named_parameters():
        param.requires_grad = name.split(".")[0] == CLASSIFIER


# ----------------------------------------------------------------- the file
_cache: Dict[Tuple[str, int, int], Dict[str, torch.Tensor]] = {}


def load_checkpoint(weights) -> Dict[str, torch.Tensor]:
    """The weights' state_dict: from the hub folder, else downloaded there."""
    path = checkpoint_path(weights)
    if not os.path.isfile(path):
        _download(weights, path)
    return _read(path)


def _read(path: str) -> Dict[str, torch.Tensor]:
    # A cell builds its model more than once (measurement, then each training
    # seed); keep the last file read so it is parsed once.
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _cache:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
            raise PretrainedWeightsMismatch(
                f"{path}: cannot read the weights file ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
                f"delete it to download it again"
            ) from None
        _cache.clear()
        _cache[key] = state
    return _cache[key]


def _unavailable(weights, path: str, why: str) -> PretrainedWeightsUnavailable:
    return PretrainedWeightsUnavailable(
        f"pretrained weights {weights_name(weights)} are not available ({why}): download {weights.url} "
        f"and place it at {path}"
    )


def _download(weights, path: str) -> None:
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise _unavailable(weights, path, f"{OFFLINE_ENV} is set")
    host = urlparse(weights.url).hostname or ""
    try:
        # Cheap probe first: DNS or connect failures answer in seconds.
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise _unavailable(weights, path, f"offline: cannot reach {host}: {e}") from None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        # Writes the file into the hub folder, so the next run finds it on disk.
        weights.get_state_dict(progress=False)
    except (URLError, OSError, RuntimeError) as e:
        raise _unavailable(weights, path, f"download failed: {' '.join(str(e).split())[:160]}") from None
    finally:
        socket.setdefaulttimeout(previous)
    if not os.path.isfile(path):
        raise _unavailable(weights, path, "the download did not produce the file")
