"""SEC: seed, expand and constrain losses (Kolesnikov & Lampert, ECCV 2016).

All three take ``probs`` ``[B, 1 + C, h, w]``, the network's softmax output with channel 0
the background. SEC adds ``1e-4`` to the softmax and renormalises before these losses; the
caller does that, so every value of ``probs`` is assumed strictly positive (a 0 gives an
infinite loss, as in SEC).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sec_seed_loss(probs: Tensor, cues: Tensor) -> Tensor:
    """SEC's seeding loss: cross-entropy of ``probs`` on the localisation cues.

    ``probs``: ``[B, 1 + C, h, w]`` softmax output; ``cues``: ``[B, 1 + C, h, w]`` ``{0, 1}``
    seeds (channel ``k`` marks the pixels seeded with class ``k``, 0 the background).
    Returns the 0-d ``-mean_b (sum_{k,h,w} cues * log probs / sum_{k,h,w} cues)`` in the dtype
    of ``probs``: every image weighs the same whatever its number of seeds. An image without
    any seed gives ``0 / 0`` (NaN), as in SEC. Gradient flows to ``probs`` only.

    Reference: github.com/kolesman/SEC ``pylayers/pylayers.py`` ``SeedLossLayer``.
    """
    _check_probs(probs)
    if cues.shape != probs.shape:
        raise ValueError(f"cues must have the shape of probs {tuple(probs.shape)}, got {tuple(cues.shape)}")
    cues = cues.to(probs.dtype)
    # the product with a 0 cue is exactly 0 for the strictly positive probs SEC feeds in
    per_image = (cues * probs.log()).sum((1, 2, 3)) / cues.sum((1, 2, 3))
    return -per_image.mean()


def sec_expand_loss(probs: Tensor, labels: Tensor, q_fg: float = 0.996, q_bg: float = 0.999) -> Tensor:
    """SEC's expansion loss: global weighted rank pooling (GWRP) against the image labels.

    ``probs``: ``[B, 1 + C, h, w]`` softmax output; ``labels``: ``[B, C]`` multi-hot (a value
    above 0.5 marks a present class). ``gwrp_q(x)`` of one ``h x w`` map sorts its values in
    decreasing order and returns ``sum_i q^i x_i / sum_i q^i`` (``i = 0 .. h*w - 1``):
    ``q = 0`` is max pooling, ``q = 1`` mean pooling. The 0-d loss, in the dtype of
    ``probs``, is the sum of

    - ``-mean_b mean_{c present} log gwrp_{q_fg}(probs_c)``,
    - ``-mean_b mean_{c absent} log(1 - max_hw probs_c)``,
    - ``-mean_b log gwrp_{q_bg}(probs_0)`` (the background is always present);

    an image with no absent class contributes 0 to the second term (and one with no present
    class 0 to the first) but still counts in ``mean_b``. ``q_fg`` and ``q_bg`` must lie in
    ``[0, 1]``. Gradient flows to ``probs`` only.

    Reference: github.com/kolesman/SEC ``pylayers/pylayers.py`` ``ExpandLossLayer``.
    """
    _check_probs(probs)
    b, channels = probs.shape[:2]
    if labels.shape != (b, channels - 1):
        raise ValueError(f"labels must be [B, C] = {(b, channels - 1)}, got {tuple(labels.shape)}")
    for name, q in (("q_fg", q_fg), ("q_bg", q_bg)):
        if not 0 <= q <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {q}")
    present = labels > 0.5
    absent = ~present
    fg = probs[:, 1:]

    # log(1) = 0 stands in for the left-out classes, so no inf (or its NaN gradient) appears
    log_fg = torch.where(present, _gwrp(fg, q_fg), 1).log()
    term_present = log_fg.sum(1) / present.sum(1).clamp_min(1)
    log_absent = torch.where(absent, 1 - fg.flatten(2).amax(-1), 1).log()
    term_absent = log_absent.sum(1) / absent.sum(1).clamp_min(1)
    term_bg = _gwrp(probs[:, :1], q_bg)[:, 0].log()
    return -(term_present.mean() + term_absent.mean() + term_bg.mean())


def sec_constrain_loss(probs: Tensor, crf_probs: Tensor) -> Tensor:
    """SEC's constrain-to-boundary loss: KL divergence of the CRF-smoothed output from ``probs``.

    ``probs``: ``[B, 1 + C, h, w]`` softmax output; ``crf_probs``: ``[B, 1 + C, h, w]`` the
    dense CRF's marginals for the image with unary ``log probs``. Returns the 0-d
    ``mean_{b,h,w} sum_k crf_probs * log(crf_probs / probs)`` in the dtype of ``probs``
    (a ``crf_probs`` of exactly 0 contributes 0, the KL convention). ``crf_probs`` is detached:
    gradient flows to ``probs`` only.

    Reference: github.com/kolesman/SEC ``pylayers/pylayers.py`` ``ConstrainLossLayer``.
    """
    _check_probs(probs)
    if crf_probs.shape != probs.shape:
        raise ValueError(
            f"crf_probs must have the shape of probs {tuple(probs.shape)}, got {tuple(crf_probs.shape)}"
        )
    target = crf_probs.detach().to(probs.dtype)
    # xlogy keeps 0 * log 0 at 0 where the CRF rules a class out entirely
    kl = torch.xlogy(target, target) - target * probs.log()
    return kl.sum(1).mean()


def _check_probs(probs: Tensor) -> None:
    if probs.ndim != 4 or probs.shape[1] < 2:
        raise ValueError(f"probs must be [B, 1 + C, h, w] with C >= 1, got {tuple(probs.shape)}")


def _gwrp(x: Tensor, q: float) -> Tensor:
    """Global weighted rank pooling of ``x`` ``[B, K, h, w]`` with decay ``q``: ``[B, K]``."""
    ranked = x.flatten(2).sort(-1, descending=True).values
    # float64 powers so that q ** i underflows to 0 only where it truly is negligible
    weights = torch.tensor(q, dtype=torch.float64) ** torch.arange(ranked.shape[-1], dtype=torch.float64)
    weights = (weights / weights.sum()).to(device=x.device, dtype=x.dtype)
    return (ranked * weights).sum(-1)
