#!/usr/bin/env bash
# SEAM on VOC 2012 as a chain of SLURM jobs: submit_psa.sh with train-cls --method seam
# (whose presets follow it through every stage; see ../seam_voc12.sh).
#
# Usage: pipelines/slurm/submit_seam.sh VOC2012_DIR WORKDIR RES38_WEIGHTS  (as submit_psa.sh)
set -euo pipefail
METHOD=seam exec "$(dirname "${BASH_SOURCE[0]}")/submit_psa.sh" "$@"
