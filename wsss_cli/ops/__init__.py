"""The pipeline's algorithms as pure functions (no files, no models, no global state; the
one exception, ``ops.native``, keeps the C kernels it builds in a cache folder).

The semantics of every name here are fixed by ``OPS_API.md`` and checked against
test vectors recorded from the papers' reference code (``tests/test_ops_*.py``).
"""

from wsss_cli.ops.affinity import affinity_labels, affinity_offsets
from wsss_cli.ops.crf import CRF_BACKENDS, dense_crf, dense_crf_torch
from wsss_cli.ops.erasing import (
    erase_by_maps,
    hide_patches,
    minmax_normalize,
    mixup,
    predicted_classes,
    region_mask,
    scaled_grid_sizes,
)
from wsss_cli.ops.gradcam import gradcam
from wsss_cli.ops.metrics import confusion_matrix, miou
from wsss_cli.ops.ngwp import ngwp, pseudo_gt
from wsss_cli.ops.pamr import pamr
from wsss_cli.ops.random_walk import random_walk
from wsss_cli.ops.regions import superpixel_regions
from wsss_cli.ops.seam import pcm, seam_losses, seam_normalize
from wsss_cli.ops.sec import sec_constrain_loss, sec_expand_loss, sec_seed_loss
from wsss_cli.ops.seeds import sec_seeds
from wsss_cli.ops.spn import normalize_gates, spn_gate_targets, spn_propagate
from wsss_cli.ops.stochastic_gate import stochastic_gate

__all__ = [
    "CRF_BACKENDS",
    "affinity_labels",
    "affinity_offsets",
    "confusion_matrix",
    "dense_crf",
    "dense_crf_torch",
    "erase_by_maps",
    "gradcam",
    "hide_patches",
    "minmax_normalize",
    "miou",
    "mixup",
    "ngwp",
    "normalize_gates",
    "pamr",
    "pcm",
    "predicted_classes",
    "pseudo_gt",
    "random_walk",
    "region_mask",
    "scaled_grid_sizes",
    "seam_losses",
    "seam_normalize",
    "sec_constrain_loss",
    "sec_expand_loss",
    "sec_seed_loss",
    "sec_seeds",
    "spn_gate_targets",
    "spn_propagate",
    "stochastic_gate",
    "superpixel_regions",
]
