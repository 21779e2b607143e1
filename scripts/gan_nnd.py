#!/usr/bin/env python
"""Fig. 6: neural-net divergence (Gulrajani, Raffel & Metz 2019) of trained generators, plus a memorised baseline.

    python scripts/gan_nnd.py RUN_DIR [RUN_DIR ...] [--memorised] [--steps 2000] [--critic-k 64]

A fresh critic (the run's critic class at width ``--critic-k``; default the run's own width) is trained from
scratch with the WGAN-GP loss (Adam 1e-4, (0.5, 0.999), GP 10, batch 64) to separate fresh generator samples
from training images; NND = mean D(test images) - mean D(fresh samples) over ``--eval`` held-out images and as
many new samples. ``--memorised`` adds the baseline whose "generator" returns random training images.
Prints one JSON line per run.
"""
import argparse
import json
from pathlib import Path
from typing import Callable

import torch

from callbacks.gda_gan import real_images
from lit_modules.gda_gan import critic_loss
from gan_run import instantiate, load_run, training_images

Sampler = Callable[[int], torch.Tensor]  # n -> images in [-1, 1]


def nnd(make_critic: Callable[[], torch.nn.Module], sample: Sampler, train: torch.Tensor, test: torch.Tensor,
        steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    critic = make_critic()
    opt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        real = train[torch.randint(len(train), (64,), generator=g)]
        loss, _, _ = critic_loss(critic, real, sample(64), 10.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        fake = torch.cat([critic(sample(250)) for _ in range(0, len(test), 250)])[:len(test)]
        return float(torch.cat([critic(b) for b in test.split(250)]).mean() - fake.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval", type=int, default=2000)
    parser.add_argument("--critic-k", type=int, default=None)
    parser.add_argument("--memorised", action="store_true")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import yaml

    for run in args.runs:
        generator, _, data = load_run(run, args.data_root)
        spec = yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["critic"]
        overrides = {"k": args.critic_k} if args.critic_k else {}
        make_critic = lambda: instantiate(spec, **overrides)  # noqa: E731
        train = training_images(data) * 2 - 1
        test = torch.cat([b.float() / 255 for b in real_images(data.test_set, args.eval, 500)]) * 2 - 1
        g = torch.Generator().manual_seed(args.seed + 1)

        @torch.no_grad()
        def from_generator(n: int) -> torch.Tensor:
            return generator(torch.randn(n, generator.latent_dim, generator=g))

        samplers = {"generator": from_generator}
        if args.memorised:
            samplers["memorised"] = lambda n: train[torch.randint(len(train), (n,), generator=g)]
        for name, sample in samplers.items():
            value = nnd(make_critic, sample, train, test, args.steps, args.seed)
            print(json.dumps({"run": str(run), "samples": name, "nnd": value, "critic_steps": args.steps,
                              "eval_images": len(test), "critic_k": args.critic_k or spec["init_args"].get("k")}))


if __name__ == "__main__":
    main()
