"""In-memory uint8 tensors vs per-item decoding through the torchvision dataset (one training epoch each).

    python benchmarks/data_loading.py --data-root ../shared/data [--dataset FashionMNIST] [--num-workers 0]
                                      [--max-train-samples N] [--pairs 5]

Both paths yield the same uint8 batches (tests/test_datamodules.py checks it); only the loading differs. Prints the
samples/s ratio in-memory / decoding as the median of ``--pairs`` alternating pairs in one process, spread min-max.
"""
import argparse
import time

import datamodules
from pairs import alternating_pairs, summary


def epoch_samples_per_second(dm: datamodules.VisionDataModule) -> float:
    loader = dm.train_dataloader()
    start, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += len(images)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--dataset", default="FashionMNIST", choices=["MNIST", "FashionMNIST", "CIFAR10", "CIFAR100"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--pairs", type=int, default=5)
    opts = parser.parse_args()
    cls = getattr(datamodules, f"{opts.dataset}DataModule")
    dms = {}
    for in_memory in (True, False):
        dms[in_memory] = cls(root=opts.data_root, download=False, batch_size=opts.batch_size, in_memory=in_memory,
                             num_workers=opts.num_workers, max_train_samples=opts.max_train_samples)
        dms[in_memory].prepare_data()
        dms[in_memory].setup("fit")
    print(f"{opts.dataset}: {len(dms[True].train_set)} samples, batch {opts.batch_size}, {opts.num_workers} workers; "
          f"in-memory tensors vs per-item decoding, samples/s")
    ratios = alternating_pairs(lambda: epoch_samples_per_second(dms[True]),
                               lambda: epoch_samples_per_second(dms[False]), opts.pairs, "samples/s",
                               labels=("in-memory", "decoding"))
    print(summary(ratios, "ratio in-memory / decoding"))


if __name__ == "__main__":
    main()
