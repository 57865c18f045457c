"""SEAM: CAM normalisation, pixel correlation module and training losses (Wang et al., CVPR 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-5


def seam_normalize(cams: Tensor) -> Tensor:
    """SEAM's normalised, foreground-arg-max CAMs: the input of its PCM.

    ``cams``: ``[B, 1 + C, h, w]`` raw class maps; channel 0 is ignored. Per image and
    channel ``x = relu(cams)`` and ``x = relu(x - 1e-5) / (max_hw x + 1e-5)``; then channel 0
    becomes ``1 - max`` over the foreground channels, and every foreground value strictly
    below its pixel's foreground maximum is set to 0. Returns ``[B, 1 + C, h, w]`` in the
    dtype of ``cams``, without gradient (SEAM computes it from the detached CAMs).

    Reference: github.com/YudeWang/SEAM ``network/resnet38_SEAM.py``, ``Net.forward``.
    """
    if cams.ndim != 4 or cams.shape[1] < 2:
        raise ValueError(f"cams must be [B, 1 + C, h, w] with C >= 1, got {tuple(cams.shape)}")
    with torch.no_grad():
        positive = F.relu(cams.detach())
        peak = positive.flatten(2).amax(-1)[..., None, None]
        fg = (F.relu(positive - _EPS) / (peak + _EPS))[:, 1:]
        return torch.cat([1 - fg.amax(1, keepdim=True), _keep_max(fg)], 1)


def pcm(cams: Tensor, features: Tensor) -> Tensor:
    """SEAM's pixel correlation module: ``cams`` propagated along feature-space affinities.

    ``cams``: ``[B, K, h, w]``; ``features``: ``[B, D, h2, w2]``, the PCM's projected features
    (the output of SEAM's ``f9``). ``cams`` are resized to ``h2 x w2`` (bilinear,
    ``align_corners=True``); with ``f`` the features scaled to unit L2 norm over ``D`` at every
    position (``f / (||f|| + 1e-5)``), the affinity ``A = relu(f^T f)`` ``[N, N]``
    (``N = h2 * w2``) has every column divided by its sum (``+ 1e-5``) and the result is
    ``cams_flat @ A``. Returns ``[B, K, h2, w2]`` in the dtype of ``cams``.

    Gradient flows to both inputs; nothing is detached here. In SEAM the caller detaches: the
    ``cams`` come from :func:`seam_normalize` (no gradient) and the backbone features are
    detached before the projection, so the PCM loss trains only the projection layers.
    Memory is ``B * N * N`` (dense), fine at SEAM's 56 x 56 feature grid.

    Reference: github.com/YudeWang/SEAM ``network/resnet38_SEAM.py``, ``Net.PCM``.
    """
    if cams.ndim != 4 or features.ndim != 4 or cams.shape[0] != features.shape[0]:
        raise ValueError(
            f"cams must be [B, K, h, w] and features [B, D, h2, w2] with the same B, got shapes "
            f"{tuple(cams.shape)} and {tuple(features.shape)}"
        )
    b, k = cams.shape[:2]
    h, w = features.shape[2:]
    resized = F.interpolate(cams, size=(h, w), mode="bilinear", align_corners=True)
    f = features.to(cams.dtype).flatten(2)
    f = f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + _EPS)
    affinity = F.relu(f.transpose(1, 2) @ f)
    affinity = affinity / (affinity.sum(1, keepdim=True) + _EPS)
    return (resized.reshape(b, k, h * w) @ affinity).view(b, k, h, w)


def seam_losses(
    cam1: Tensor,
    cam_rv1: Tensor,
    cam2: Tensor,
    cam_rv2: Tensor,
    labels: Tensor,
    scale: float = 0.3,
    ecr_top: float = 0.2,
) -> tuple[Tensor, Tensor, Tensor]:
    """SEAM's training objective from the Siamese network's two branches.

    ``cam1``, ``cam_rv1``: ``[N, 1 + C, H, W]``, the raw and PCM-refined CAMs of the image at
    image size; ``cam2``, ``cam_rv2``: ``[N, 1 + C, h, w]``, the same for the image rescaled by
    ``scale`` (``h = floor(H * scale)``, ``w = floor(W * scale)``, as ``F.interpolate`` sizes
    it); ``labels``: ``[N, C]`` multi-hot. With ``L = [1, labels]`` and ``max_norm`` the
    per-map ``relu(relu(p) - min - 1e-5) / (max - min + 1e-5)`` of ``relu(p)``:

    - ``loss_cls``: mean over the branches of the multi-label soft-margin loss of the average
      pooled foreground CAMs, plus the mean over the branches of the adaptive min-pooling
      term of ``(cam_rv * L)[:, 1:]``;
    - ``loss_er``: mean ``|c1 - c2|`` over the foreground channels, ``c1`` =
      ``resize(max_norm(cam1)) * L`` (bilinear, ``align_corners=True``, to ``h x w``),
      ``c2 = max_norm(cam2) * L``;
    - ``loss_ecr``: with channel 0 of ``c1``, ``c2`` set to ``1 - max`` foreground and
      ``r1 = resize(max_norm(cam_rv1)) * L``, ``r2 = max_norm(cam_rv2) * L``, the mean of the
      top ``int((1 + C) * h * w * ecr_top)`` values per image of ``|onehot(c2) - r1|`` plus the
      same for ``|onehot(c1) - r2|`` (the one-hot targets carry no gradient).

    Returns 0-d ``(loss_cls, loss_er, loss_ecr)`` in the dtype of ``cam1``; SEAM minimises
    their sum. Gradient flows to all four CAM inputs.

    Reference: github.com/YudeWang/SEAM ``train_SEAM.py`` (training loop, with ``1 + C`` for
    its literal 21 classes) and ``tool/visualization.py`` ``max_norm``.
    """
    if cam1.ndim != 4 or cam1.shape[1] < 2:
        raise ValueError(f"cam1 must be [N, 1 + C, H, W] with C >= 1, got {tuple(cam1.shape)}")
    n, channels, big_h, big_w = cam1.shape
    if cam_rv1.shape != cam1.shape or cam2.ndim != 4 or cam_rv2.shape != cam2.shape:
        raise ValueError(
            f"cam_rv1 must have the shape of cam1 and cam2, cam_rv2 a common [N, 1 + C, h, w] one, "
            f"got {tuple(cam1.shape)}, {tuple(cam_rv1.shape)}, {tuple(cam2.shape)}, {tuple(cam_rv2.shape)}"
        )
    # the same double arithmetic and truncation as F.interpolate(scale_factor=scale)
    size = (int(big_h * scale), int(big_w * scale))
    if cam2.shape[:2] != cam1.shape[:2] or tuple(cam2.shape[2:]) != size:
        raise ValueError(
            f"cam2 must be [N, 1 + C, floor(H * scale), floor(W * scale)] = {(n, channels, *size)} "
            f"for cam1 {tuple(cam1.shape)} and scale {scale}, got {tuple(cam2.shape)}"
        )
    if labels.shape != (n, channels - 1):
        raise ValueError(f"labels must be [N, C] = {(n, channels - 1)}, got {tuple(labels.shape)}")
    h, w = size
    top = int(channels * h * w * ecr_top)
    if h * w < 4 or not 1 <= top <= channels * h * w:
        raise ValueError(
            f"cam2 needs at least 4 pixels and ecr_top must select between 1 and all of its "
            f"{channels * h * w} values, got {h}x{w} pixels and ecr_top {ecr_top}"
        )

    labels = labels.to(cam1.dtype)
    present = torch.cat([labels.new_ones(n, 1), labels], 1)[..., None, None]

    pooled1 = cam1.mean((2, 3))[:, 1:]
    pooled2 = cam2.mean((2, 3))[:, 1:]
    loss_cls = (
        F.multilabel_soft_margin_loss(pooled1, labels) + F.multilabel_soft_margin_loss(pooled2, labels)
    ) / 2 + (_min_pool((cam_rv1 * present)[:, 1:]) + _min_pool((cam_rv2 * present)[:, 1:])) / 2

    def shrink(p: Tensor) -> Tensor:
        return F.interpolate(_max_norm(p), size=size, mode="bilinear", align_corners=True)

    c1 = shrink(cam1) * present
    c2 = _max_norm(cam2) * present
    loss_er = (c1[:, 1:] - c2[:, 1:]).abs().mean()

    r1 = shrink(cam_rv1) * present
    r2 = _max_norm(cam_rv2) * present
    # each branch's refined map is pulled towards the other branch's arg-max CAM
    target1 = _one_hot(_with_background(c2.detach()))
    target2 = _one_hot(_with_background(c1.detach()))
    ecr1 = (target1 - r1).abs().flatten(1).topk(top, dim=1).values.mean()
    ecr2 = (target2 - r2).abs().flatten(1).topk(top, dim=1).values.mean()
    return loss_cls, loss_er, ecr1 + ecr2


def _max_norm(p: Tensor) -> Tensor:
    """``[N, K, h, w]`` maps rescaled to ``[0, 1)`` per image and channel (SEAM's ``max_norm``)."""
    p = F.relu(p)
    flat = p.flatten(2)
    low = flat.amin(-1)[..., None, None]
    high = flat.amax(-1)[..., None, None]
    return F.relu(p - low - _EPS) / (high - low + _EPS)


def _min_pool(x: Tensor) -> Tensor:
    """SEAM's adaptive min-pooling term of ``x`` ``[N, K, h, w]``: 0-d.

    The sum of ``relu`` of the ``h * w // 4`` smallest per-pixel channel maxima, divided by
    their count times ``N``.
    """
    n, _, h, w = x.shape
    k = h * w // 4
    smallest = x.amax(1).view(n, -1).topk(k, dim=-1, largest=False).values
    return F.relu(smallest).sum() / (k * n)


def _with_background(x: Tensor) -> Tensor:
    """``x`` ``[N, 1 + C, h, w]`` with channel 0 replaced by ``1 - max`` of the foreground."""
    fg = x[:, 1:]
    return torch.cat([1 - fg.amax(1, keepdim=True), fg], 1)


def _one_hot(x: Tensor) -> Tensor:
    """``x`` ``[N, 1 + C, h, w]`` with the foreground kept only at each pixel's foreground max."""
    return torch.cat([x[:, :1], _keep_max(x[:, 1:])], 1)


def _keep_max(fg: Tensor) -> Tensor:
    """``fg`` ``[N, C, h, w]`` with every value below its pixel's maximum over C set to 0."""
    return torch.where(fg < fg.amax(1, keepdim=True), torch.zeros_like(fg), fg)
