"""In-memory uint8 tensors vs per-item decoding through the torchvision dataset (one training epoch).

    python benchmarks/data_loading.py --data-root ../shared/data [--dataset FashionMNIST] [--num-workers 0]

Both paths yield the same uint8 batches (tests/test_datamodules.py checks it); only the loading differs.
"""
import argparse
import time

import datamodules


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
    opts = parser.parse_args()
    cls = getattr(datamodules, f"{opts.dataset}DataModule")
    rates = {}
    for in_memory in (True, False):
        dm = cls(root=opts.data_root, download=False, batch_size=opts.batch_size, in_memory=in_memory,
                 num_workers=opts.num_workers)
        dm.prepare_data()
        dm.setup("fit")
        rates[in_memory] = epoch_samples_per_second(dm)
        print(f"{'in-memory tensors' if in_memory else 'per-item decoding'}: {rates[in_memory]:12.0f} samples/s "
              f"({len(dm.train_set)} samples, batch {opts.batch_size}, {opts.num_workers} workers)")
    print(f"ratio in-memory / decoding = {rates[True] / rates[False]:.1f}x")


if __name__ == "__main__":
    main()
