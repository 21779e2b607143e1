#!/usr/bin/env bash
# Runs the eight Fig. 1-3 configs (GN and GF, alpha in {1/8, 8, 16, 256}) one after another, then plots them.
#   scripts/gauss_newton_runs.sh ROOT [extra train.py flags...]
# With real data: scripts/gauss_newton_runs.sh runs/gn_paper --data.root /path/to/folder/with/csv
# Synthetic stand-in (NOT California Housing):
#   scripts/gauss_newton_runs.sh runs/gn_synthetic --data datamodules.SyntheticRegressionDataModule
set -euo pipefail
root=$1; shift
for kind in gn gf; do
  for alpha in 0.125 8 16 256; do
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} python train.py --config "configs/gauss_newton/${kind}_alpha${alpha}.yaml" \
      --trainer.default_root_dir "$root" --wandb false --trainer.enable_progress_bar false \
      --trainer.enable_model_summary false "$@"
  done
done
