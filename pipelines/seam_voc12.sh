#!/usr/bin/env bash
# SEAM (Wang et al., CVPR 2020) on PASCAL VOC 2012: PSA's pipeline (psa_voc12.sh) with the
# classifier trained by train-cls --method seam. Its presets come with the method:
# train_SEAM.py's recipe, SEAM's inference (PCM-refined maps, min-max normalised), its
# affinity-label alphas 4 / 24 and walk alpha 6, logt 6.
#
# Usage: pipelines/seam_voc12.sh VOC2012_DIR WORKDIR [RES38_WEIGHTS]  (as psa_voc12.sh)
set -euo pipefail
METHOD=seam exec "$(dirname "${BASH_SOURCE[0]}")/psa_voc12.sh" "$@"
