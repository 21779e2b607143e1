"""Thm 6.1's constants next to the measured NTK at initialisation (docs/resnet_width.md).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/resnet_width_theory.py [--n 16 32 64 128 --seeds 0 1 2]

Prints a markdown table: lambda(X), kappa (4.7), ||r_0||/||y||, lambda_min(K_0) against the alpha_0^2 bound (3.21)
(delta' = 0), and K_{delta,delta'}, alpha, beta, L, eta_thm at delta = 1, delta' = 0.1 (m = n, H = 10, tanh, c_res = 0.5).
"""
import argparse
import statistics

import torch


from nets.resnet_width.ntk import eig_extremes, ntk
from datamodules.sphere import sphere_data
from nets.resnet_width.net import GulcuResNet, data_kernel
from nets.resnet_width.theory import kappa_at_init, theory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--delta-prime", type=float, default=0.1)
    args = parser.parse_args()
    print("| n | lambda(X) | kappa (4.7) | ‖r_0‖/‖y‖ | lambda_min(K_0) | alpha_0^2 bound | ratio | K_{δ,δ'} | "
          "required m | alpha_δ' | beta_δ' | L_δ' | eta_thm | eta used = 1/lambda_max(K_0) |")
    print("|" + "---|" * 14)
    for n in args.n:
        rows = []
        for seed in args.seeds:
            x, y = sphere_data(n, args.d, "sign", torch.Generator().manual_seed(seed))
            torch.manual_seed(seed)
            net = GulcuResNet(args.d, n + n % 2, args.depth).double()
            net.set_output(y)
            lam_x = eig_extremes(data_kernel(x))[0]
            lam_min, lam_max = eig_extremes(ntk(net, x))
            k = kappa_at_init(net, x)
            bound = theory(k, lam_x, n, args.d, float(y.norm()), args.depth, net.c_phi, net.c_res, 1e-12, m=net.width)
            t = theory(k, lam_x, n, args.d, float(y.norm()), args.depth, net.c_phi, net.c_res, args.delta_prime,
                       m=net.width)
            with torch.no_grad():
                misfit = float((net(x) - y).norm() / y.norm())
            rows.append([lam_x, k, misfit, lam_min, bound.alpha0**2, lam_min / bound.alpha0**2, t.width_factor,
                         t.width_factor * n, t.alpha, t.beta, t.lipschitz, t.eta, 1 / lam_max])
        med = [statistics.median(col) for col in zip(*rows)]
        print(f"| {n} | " + " | ".join(f"{v:.3g}" for v in med) + " |")
    print(f"\nmedians over seeds {args.seeds}; m = n, H = {args.depth}, d = {args.d}, delta = 1, "
          f"delta' = {args.delta_prime} (alpha_0^2 bound at delta' -> 0)")


if __name__ == "__main__":
    main()
