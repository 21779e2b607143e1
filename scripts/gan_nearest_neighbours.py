#!/usr/bin/env python
"""Fig. 10 (App. E): generated samples next to their nearest training images (L2 in pixel space).

    python scripts/gan_nearest_neighbours.py RUN_DIR [RUN_DIR ...] --out docs/results/nn.png [--samples 32]

Each row: a sample (BatchNorm in eval mode, seeded noise), then its ``--neighbours`` nearest training images by
Euclidean distance on [0, 1] pixels. One grid per run, stacked left to right in the order given.
"""
import argparse
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from gan_run import load_run, training_images


@torch.no_grad()
def neighbour_rows(run_dir: Path, samples: int, neighbours: int, data_root: str | None, limit: int | None,
                   seed: int) -> torch.Tensor:
    generator, _, data = load_run(run_dir, data_root)
    z = torch.randn(samples, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    fake = ((generator(z) + 1) / 2).clamp(0, 1)
    train = training_images(data, limit)
    dist = torch.cat([torch.cdist(fake.flatten(1), chunk.flatten(1)) for chunk in train.split(5000)], 1)
    idx = dist.topk(neighbours, largest=False).indices
    rows = torch.cat([fake[:, None], train[idx]], 1)  # (samples, 1 + neighbours, C, H, W)
    grid = make_grid(rows.flatten(0, 1), nrow=1 + neighbours, padding=2, pad_value=1.0)
    return grid if grid.shape[0] == 3 else grid.expand(3, -1, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--neighbours", type=int, default=3)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--train-limit", type=int, default=None, help="search only the first N training images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    grids = [neighbour_rows(r, args.samples, args.neighbours, args.data_root, args.train_limit, args.seed)
             for r in args.runs]
    height = max(g.shape[1] for g in grids)
    grids = [torch.nn.functional.pad(g, (0, 8, 0, height - g.shape[1]), value=1.0) for g in grids]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(grids, 2), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
