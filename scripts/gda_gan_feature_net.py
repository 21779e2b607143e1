#!/usr/bin/env python
"""Writes the domain-FID feature net (nets/gda_gan/fmnist_cnn2.pt) from a finished CNN2 Fashion-MNIST run.

    python train.py --config configs/baseline/cnn2_fmnist.yaml --data.init_args.root /work/shared/data
    python scripts/gda_gan_feature_net.py runs/cnn2_fmnist/version_0

Takes the run's tested checkpoint (best val/acc), keeps the CNN2 weights (the ``net.`` entries of its state_dict)
and prints the file's md5 (``FMNIST_WEIGHTS_MD5`` in nets/gda_gan/fid_features.py) and the run's test accuracy.
"""
import argparse
import json
from pathlib import Path

import torch

from nets.gda_gan.fid_features import FMNIST_WEIGHTS, file_md5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=FMNIST_WEIGHTS)
    args = parser.parse_args()
    results = json.loads((args.run / "results.json").read_text())
    state = torch.load(results["tested_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    net = {k[len("net."):]: v.clone() for k, v in state.items() if k.startswith("net.")}
    torch.save(net, args.out)
    print(f"wrote {args.out} (md5 {file_md5(args.out)}) from {results['tested_checkpoint']}; "
          f"test/acc {results['test/acc']:.4f}")


if __name__ == "__main__":
    main()
