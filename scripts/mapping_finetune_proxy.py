#!/usr/bin/env python
"""A small stand-in for Table 10 that runs on CPU with the data at hand: Eq. 25 fine-tuning vs ordinary fine-tuning.

    python scripts/mapping_finetune_proxy.py --root /work/shared/data [--out runs/mapping_finetune_proxy]

Pretrain a small ResNet-style net (``conv1``, ``layer4``, ``fc``: torchvision's names, so both layer sets apply)
on Fashion-MNIST classes 0-4, then fine-tune it on classes 5-9 with a fresh 5-class ``fc`` (as the 2-class head
replaces ImageNet's) from ``--train_per_class`` images per class: ordinary fine-tuning of all / layer4+fc weights,
and MappingFineTuneModule with L = 1, 250, 25000 on both sets. Per case, alpha (Eq. 25; grid ``--alphas``) or the
plain lr (grid ``--plain_lrs``) is chosen on a validation split with the first seed; then every seed runs with
it. Test accuracy is on all 5,000 test images of classes 5-9. Prints JSON lines and a table. Not the paper's
setting (no deepfakes, no ImageNet ResNet-50): it shows the mechanism only.
"""
import argparse
import functools
import json
import time
from pathlib import Path

import torch
from torch import Tensor, nn



class ProxyNet(nn.Module):
    """conv1/bn1 -> layer4 (two conv-BN-ReLU) -> fc; 1x28x28 inputs."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.layer4 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                    nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                                    nn.ReLU())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.max_pool2d(self.bn1(self.conv1(x)).relu(), 2)
        return self.fc(self.layer4(x).mean((2, 3)))


def load(root: str, train: bool, classes: range) -> tuple[Tensor, Tensor]:
    from torchvision.datasets import FashionMNIST

    data = FashionMNIST(root, train=train, download=False)
    keep = (data.targets >= classes.start) & (data.targets < classes.stop)
    x = data.data[keep].unsqueeze(1).float().div(255).sub(0.2860).div(0.3530)
    return x, data.targets[keep] - classes.start


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
    return correct / len(y)


def fit(module: nn.Module, x: Tensor, y: Tensor, epochs: int, batch: int, seed: int) -> float:
    """Runs the module's own training_step (Mapping Loss included) with its own optimizer; returns seconds."""
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        module.train()
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            loss = module.training_step((x[idx], y[idx]), 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def pretrained(args: argparse.Namespace) -> Path:
    path = Path(args.out) / "pretrained_classes0-4.pth"
    if path.is_file():
        return path
    from lit_modules import SupervisedModule

    x, y = load(args.root, True, range(0, 5))
    torch.manual_seed(0)
    net = ProxyNet(5)
    module = SupervisedModule(net, num_classes=5)
    seconds = fit(module, x, y, args.pretrain_epochs, 128, 0)
    xt, yt = load(args.root, False, range(0, 5))
    print(json.dumps({"pretrain_test_acc_classes0-4": accuracy(net, xt, yt), "seconds": round(seconds, 1)}))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def target_net(weights: Path, seed: int) -> ProxyNet:
    net = ProxyNet(5)
    net.load_state_dict(torch.load(weights, weights_only=True))
    torch.manual_seed(seed)
    net.fc = nn.Linear(64, 5)  # a fresh head for the new classes
    return net


def run(kind: str, layers: str, tie: int, value: float, data: dict, weights: Path, args: argparse.Namespace,
        seed: int) -> dict:
    """One fine-tuning run; ``value`` is alpha (mapping) or the lr (plain)."""
    from lit_modules import FineTuneModule, MappingFineTuneModule
    from nets.mapping import ModulationMapping

    net = target_net(weights, seed)
    if kind == "plain":
        module = FineTuneModule(net, layers, batchnorm=args.batchnorm, num_classes=5,
                                optimizer=lambda p: torch.optim.Adam(p, lr=value))
    else:
        mapping = functools.partial(ModulationMapping, layers=layers, tie=tie,
                                    latent_dim=2048 if layers == "all" else 1024, alpha=value)
        module = MappingFineTuneModule(net, mapping, batchnorm=args.batchnorm, stab_samples=8, num_classes=5,
                                       optimizer=lambda p: torch.optim.Adam(p, lr=args.latent_lr))
    torch.manual_seed(seed)
    seconds = fit(module, *data["train"], args.epochs, args.batch, seed)
    return {"kind": kind, "layers": layers, "tie": tie, ("lr" if kind == "plain" else "alpha"): value, "seed": seed,
            "val_acc": accuracy(module, *data["val"]), "test_acc": accuracy(module, *data["test"]),
            "trainable": module.parameter_counts()["trainable_params"] if kind != "plain" else
            sum(p.numel() for p in module.parameters() if p.requires_grad), "train_s": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="folder holding FashionMNIST/raw")
    parser.add_argument("--out", default="runs/mapping_finetune_proxy")
    parser.add_argument("--pretrain_epochs", type=int, default=2)
    parser.add_argument("--train_per_class", type=int, default=400)
    parser.add_argument("--val_per_class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--plain_lrs", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    parser.add_argument("--latent_lr", type=float, default=1e-2)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.1, 0.3, 1.0])
    parser.add_argument("--batchnorm", default="eval")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    weights = pretrained(args)
    x, y = load(args.root, True, range(5, 10))
    per_class = [torch.nonzero(y == c).flatten() for c in range(5)]
    train = torch.cat([p[:args.train_per_class] for p in per_class])
    val = torch.cat([p[args.train_per_class:args.train_per_class + args.val_per_class] for p in per_class])
    data = {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": load(args.root, False, range(5, 10))}
    cases = [("plain", "all", 0), ("plain", "layer4+fc", 0)] + [
        ("mapping", layers, tie) for layers in ("all", "layer4+fc") for tie in (1, 250, 25000)]
    chosen, final = {}, []
    for case in cases:
        grid = args.plain_lrs if case[0] == "plain" else args.alphas
        tried = [run(*case, value, data, weights, args, args.seeds[0]) for value in grid]
        for row in tried:
            print(json.dumps(row), flush=True)
        best = max(tried, key=lambda r: r["val_acc"])
        chosen[case] = best.get("lr", best.get("alpha"))
        final.append(best)
        for seed in args.seeds[1:]:
            final.append(run(*case, chosen[case], data, weights, args, seed))
            print(json.dumps(final[-1]), flush=True)
    print(f"\n{'case':<26}{'trainable':>11}{'chosen lr/alpha':>16}{'test acc % (seeds)':>34}{'train s':>9}")
    for case in cases:
        mine = [r for r in final if (r["kind"], r["layers"], r["tie"]) == case]
        accs = torch.tensor([100 * r["test_acc"] for r in mine])
        spread = f" +- {accs.std().item():.2f}" if len(accs) > 1 else ""
        name = f"{case[0]} {case[1]}" + (f" L={case[2]}" if case[0] != "plain" else "")
        print(f"{name:<26}{mine[0]['trainable']:>11,}{chosen[case]:>16g}{accs.mean().item():>20.2f}{spread:<10}"
              f" (n={len(accs)}){mine[0]['train_s']:>9.1f}")


if __name__ == "__main__":
    main()
