"""Loading pretrained weights into a backbone: ``none``, ``imagenet`` or a file path."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import WsssError
from .backbones import BACKBONES, Backbone


def load_pretrained(backbone: Backbone, name: str, spec: str) -> None:
    """Load weights into ``backbone`` (built as ``name``) in place.

    ``spec`` is ``"none"`` (keep the random init), ``"imagenet"`` (the standard ImageNet
    weights: downloaded for resnet50/101, otherwise an error saying how to get them), or a
    path to a ``torch.save`` file: a raw state_dict or a dict with a ``"state_dict"`` or
    ``"model"`` entry. ``module.`` (DDP) and ``backbone.`` key prefixes are stripped, keys
    the backbone does not have (``fc.*``, ``fc8.*``, heads) are ignored.

    Raises :class:`WsssError` (one line) when the file is missing or unreadable, when it
    matches fewer than half of the backbone's parameters (a different architecture), or
    when a matching key has the wrong shape.
    """
    if spec == "none":
        return
    if spec == "imagenet":
        state, source = _imagenet_state_dict(name), str(BACKBONES.get(name).imagenet_url)
    else:
        path = Path(spec).expanduser()
        state, source = _read_state_dict(path), str(path)
    _load_into(backbone, name, state, source)


def _imagenet_state_dict(name: str) -> Mapping[str, Any]:
    spec = BACKBONES.get(name)
    if spec.imagenet_url is None:
        raise WsssError(spec.imagenet_howto or f"no ImageNet weights known for backbone {name!r}")
    url = spec.imagenet_url
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True)
    except Exception as e:  # network, disk or format: all mean no weights
        raise WsssError(
            f"downloading ImageNet weights for {name} failed ({_one_line(e)}); "
            f"download {url} yourself and pass --pretrained PATH"
        ) from e
    return _unwrap(state, url)


def _read_state_dict(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise WsssError(f"pretrained weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to unpickle means a bad file
        raise WsssError(f"cannot read pretrained weights {path}: {_one_line(e)}") from e
    return _unwrap(obj, str(path))


def _unwrap(obj: Any, source: str) -> Mapping[str, Any]:
    """The state_dict inside ``obj``: ``obj`` itself or its "state_dict"/"model" entry."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise WsssError(f"{source} does not contain a state_dict of tensors")
    return obj


def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, Tensor]:
    return {
        (k[len(prefix) :] if k.startswith(prefix) else k): v
        for k, v in state.items()
        if isinstance(v, Tensor)
    }


def _load_into(backbone: Backbone, name: str, state: Mapping[str, Any], source: str) -> None:
    own = backbone.state_dict()
    param_names = {n for n, _ in backbone.named_parameters()}

    # DDP saves "module.<key>"; a whole model saved by us has its backbone under
    # "backbone.<key>" (strip that only when it matches more keys).
    tensors = _strip(state, "module.")
    stripped = _strip(tensors, "backbone.")
    if len(stripped.keys() & own.keys()) > len(tensors.keys() & own.keys()):
        tensors = stripped

    common = tensors.keys() & own.keys()
    bad_shape = sorted(k for k in common if tensors[k].shape != own[k].shape)
    matched = {k: tensors[k] for k in common if k not in bad_shape}
    n_matched = len(param_names & matched.keys())
    if 2 * n_matched < len(param_names):
        raise WsssError(
            f"{source} does not look like {name} weights: it matches only {n_matched} of "
            f"{len(param_names)} parameters ({len(bad_shape)} more with the wrong shape)"
        )
    if bad_shape:
        k = bad_shape[0]
        raise WsssError(
            f"{source} does not fit backbone {name}: {k} has shape "
            f"{tuple(tensors[k].shape)}, expected {tuple(own[k].shape)}"
            + (f" (and {len(bad_shape) - 1} more)" if len(bad_shape) > 1 else "")
        )
    backbone.load_state_dict(matched, strict=False)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
