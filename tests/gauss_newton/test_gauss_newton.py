"""GaussNewtonModule and the California Housing datamodule, on generated data in the real on-disk formats."""
import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import CaliforniaHousingDataModule, DataError
from lit_modules import GaussNewtonModule
from nets import TwoLayerTanh
from tests.conftest import read_metrics, read_results, run_dir, run_train

FEATURES = ["MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude"]


def raw_table(n: int = 120, seed: int = 0) -> np.ndarray:
    """Rows of cal_housing.data: longitude, latitude, age, totalRooms, totalBedrooms, population, households,
    medianIncome, medianHouseValue."""
    rng = np.random.default_rng(seed)
    households = rng.integers(50, 500, n).astype(float)
    return np.stack([rng.uniform(-124, -114, n), rng.uniform(32, 42, n), rng.integers(1, 52, n),
                     households * rng.uniform(3, 7, n), households * rng.uniform(0.8, 1.3, n),
                     households * rng.uniform(1.5, 4, n), households, rng.uniform(0.5, 15, n),
                     rng.uniform(15_000, 500_000, n)], axis=1)


def write_csv(root: Path, raw: np.ndarray) -> Path:
    """The CSV scikit-learn's frame would give: its feature names and derived ratios, target in $100k."""
    lon, lat, age, rooms, beds, pop, hh, inc, val = raw.T
    cols = [inc, age, rooms / hh, beds / hh, pop, pop / hh, lat, lon, val / 1e5]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "california_housing.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*FEATURES, "MedHouseVal"])
        writer.writerows(np.stack(cols, 1).tolist())
    return root


def write_archive(root: Path, raw: np.ndarray) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in raw).encode()
    with tarfile.open(root / "cal_housing.tgz", "w:gz") as archive:
        info = tarfile.TarInfo("CaliforniaHousing/cal_housing.data")
        info.size = len(text)
        archive.addfile(info, io.BytesIO(text))
    return root


@pytest.fixture
def housing(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "housing", raw_table())


# ---------------------------------------------------------------------------------------------- data
def test_csv_and_raw_archive_give_the_same_standardised_subset(tmp_path: Path) -> None:
    raw = raw_table()
    a = CaliforniaHousingDataModule(str(write_csv(tmp_path / "csv", raw)), n_train=64, n_test=32, seed=3)
    b = CaliforniaHousingDataModule(str(write_archive(tmp_path / "tgz", raw)), n_train=64, n_test=32, seed=3)
    a.setup(), b.setup()
    for (xa, ya), (xb, yb) in ((a.train_xy, b.train_xy), (a.test_xy, b.test_xy)):
        torch.testing.assert_close(xa, xb, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(ya, yb, rtol=1e-8, atol=1e-8)
    x, y = a.train_xy
    assert x.dtype == y.dtype == torch.float64 and x.shape == (64, 8)
    torch.testing.assert_close(x.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(x.std(0, correction=0), torch.ones(8, dtype=torch.float64))
    assert np.isclose(y.numpy()[:, None], raw[None, :, 8] / 1e5, rtol=1e-12).any(1).all()  # target left raw
    assert not set(y.tolist()) & set(a.test_xy[1].tolist())  # disjoint subsets


def test_missing_or_malformed_data_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="california_housing.csv"):
        CaliforniaHousingDataModule(str(tmp_path)).setup()
    (tmp_path / "california_housing.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="lacks columns"):
        CaliforniaHousingDataModule(str(tmp_path)).setup()
    with pytest.raises(ValueError, match="rows"):
        CaliforniaHousingDataModule(str(write_csv(tmp_path / "small", raw_table(20))), n_train=16, n_test=8).setup()



def corrupt(path: Path, line: int, column: str, value: str) -> None:
    """Sets one cell of the CSV (``line`` counted as in the file, the header being line 1)."""
    rows = list(csv.reader(path.open(newline="")))
    rows[line - 1][rows[0].index(column)] = value
    with path.open("w", newline="") as file:
        csv.writer(file).writerows(rows)


BAD_CSVS = {  # case -> (how to spoil a good CSV, the words the one error line must hold)
    "text cell": (lambda p: corrupt(p, 5, "AveRooms", "abc"), ["line 5, column AveRooms", "'abc'"]),
    "empty cell": (lambda p: corrupt(p, 7, "HouseAge", ""), ["line 7, column HouseAge", "is empty"]),
    "nan cell": (lambda p: corrupt(p, 3, "MedHouseVal", "nan"), ["line 3, column MedHouseVal", "'nan'"]),
    "inf cell": (lambda p: corrupt(p, 9, "Latitude", "inf"), ["line 9, column Latitude", "'inf'"]),
    "short row": (lambda p: p.write_text(p.read_text() + "1,2,3\n"), ["line 123, column AveBedrms", "is empty"]),
    "missing column": (lambda p: p.write_text(p.read_text().replace("Population", "Pop", 1)),
                       ["lacks columns Population"]),
    "header only": (lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"), ["a header but no data rows"]),
    "semicolons": (lambda p: p.write_text(p.read_text().replace(",", ";")), ["line 1", "separated by commas"]),
    "too few rows": (lambda p: None, ["has 121 rows, fewer than n_train=256 + n_val=0 + n_test=256"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_bad_csv_gives_one_line_naming_file_row_column(case: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    spoil, words = BAD_CSVS[case]
    root = write_csv(tmp_path / "data", raw_table(121))
    spoil(root / "california_housing.csv")
    sizes = [] if case == "too few rows" else ["--data.n_train", "64", "--data.n_test", "32"]
    code = run_train(["--config", "configs/gauss_newton/two_layer_california.yaml", "--data.root", str(root), *sizes,
                      "--trainer.max_steps", "2"], tmp_path / "runs")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(w in err[0] for w in words), err[0]
    assert "california_housing.csv" in err[0] or case == "too few rows"
    assert not (tmp_path / "runs" / "two_layer_california").exists() or not any((tmp_path / "runs" / "two_layer_california").iterdir())


# ---------------------------------------------------------------------------------------------- step maths
def test_riemannian_gradient_is_the_projection_onto_the_tangent_space() -> None:
    module = GaussNewtonModule(TwoLayerTanh(4, 3), alpha=2.0)
    x, g = torch.randn(20, 4, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    J = module.net.jacobian(x)
    logs = module.spectral_logs(J, g)
    gn = torch.linalg.lstsq(J, g.unsqueeze(1)).solution.squeeze(1)  # GN direction (rho = 0): P g = J v
    torch.testing.assert_close(logs["train/riem_grad_norm"], torch.linalg.vector_norm(J @ gn))
    torch.testing.assert_close(logs["train/normal_grad_norm"], torch.linalg.vector_norm(g - J @ gn))
    eig = torch.linalg.eigvalsh(J.T @ J)
    torch.testing.assert_close(logs["train/lambda_min"], eig[0])
    torch.testing.assert_close(logs["train/lambda_max"], eig[-1])
    assert logs["train/rank"] == 12


SMALL = ["--model", "lit_modules.GaussNewtonModule", "--model.net", "nets.TwoLayerTanh",
         "--model.net.in_features", "8", "--model.net.width", "3", "--data", "datamodules.CaliforniaHousingDataModule",
         "--data.n_train", "40", "--data.n_test", "20", "--data.steps_per_epoch", "10",
         "--trainer.precision", "64-true", "--trainer.log_every_n_steps", "1", "--trainer.accelerator", "cpu"]


def initial_state(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dm = CaliforniaHousingDataModule(str(root), n_train=40, n_test=20)
    dm.setup()
    net = TwoLayerTanh(8, 3)
    return net.weight.detach().reshape(-1), net.jacobian(dm.train_xy[0]), dm.train_xy[1]


@pytest.mark.parametrize("rho, eta", [(0.0, None), (1.0, None), (0.3, 0.002)])
def test_one_euler_step_matches_the_hand_computed_update(tmp_path: Path, housing: Path, rho: float,
                                                         eta: float | None) -> None:
    alpha, dt = 4.0, 0.05
    args = [*SMALL, "--data.root", str(housing), "--model.alpha", str(alpha), "--model.dt", str(dt),
            "--model.rho", str(rho), "--trainer.max_steps", "1", "--name", "one"]
    assert run_train([*args, *(["--model.eta", str(eta)] if eta else [])], tmp_path) == 0
    w0, J, y = initial_state(housing)
    grad = 2 * (0 - y)  # alpha f(w_init) = 0
    H = (1 - rho) * J.T @ J + rho * torch.eye(J.shape[1], dtype=torch.float64)
    v = torch.linalg.solve(H, J.T @ grad)  # eq. (1); rho = 1 is the plain J^T grad
    step = eta if eta else dt / alpha  # discrete update (13) with a free eta, else Euler with eta = dt / alpha
    state = torch.load(run_dir(tmp_path, "one") / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(state["net.weight"].reshape(-1), w0 - step * v, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(state["net0.weight"].reshape(-1), w0)
    assert losses(run_dir(tmp_path, "one")) == [pytest.approx(float(y @ y))]


def losses(path: Path) -> list[float]:
    return [float(r["train/loss"]) for r in read_metrics(path) if r.get("train/loss")]


def test_solvers_give_the_same_trajectory(tmp_path: Path, housing: Path) -> None:
    """lstsq vs primal at rho = 0; primal vs dual vs matrix-free CG at rho = 0.01 (the push-through identity)."""
    base = [*SMALL, "--data.root", str(housing), "--model.alpha", "8", "--trainer.max_steps", "15"]
    runs = {"lstsq0": ["--model.method", "lstsq"], "primal0": ["--model.method", "primal"],
            "primal": ["--model.rho", "0.01", "--model.method", "primal"],
            "dual": ["--model.rho", "0.01", "--model.method", "dual"],
            "cg": ["--model.rho", "0.01", "--model.method", "cg", "--model.jacobian", "matrix_free",
                   "--model.diagnostics", "false"]}
    for name, extra in runs.items():
        assert run_train([*base, *extra, "--name", name], tmp_path) == 0, name
    got = {name: losses(run_dir(tmp_path, name)) for name in runs}
    assert len(got["lstsq0"]) == 15 and got["lstsq0"][-1] < got["lstsq0"][0]
    np.testing.assert_allclose(got["primal0"], got["lstsq0"], rtol=1e-7)
    np.testing.assert_allclose(got["dual"], got["primal"], rtol=1e-9)
    np.testing.assert_allclose(got["cg"], got["primal"], rtol=1e-8)


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, housing: Path) -> None:
    base = [*SMALL, "--data.root", str(housing), "--model.alpha", "8", "--trainer.max_steps", "25"]
    assert run_train([*base, "--name", "whole"], tmp_path) == 0
    assert run_train([*base, "--name", "cut", "--trainer.max_steps", "13"], tmp_path) == 0  # mid epoch 2
    assert run_train([*base, "--name", "cut", "--ckpt_path", "last"], tmp_path) == 0
    assert read_metrics(run_dir(tmp_path, "cut")) == read_metrics(run_dir(tmp_path, "whole"))
    whole, cut = read_results(run_dir(tmp_path, "whole")), read_results(run_dir(tmp_path, "cut"))
    assert cut["train/loss"] == whole["train/loss"] and cut["global_step"] == 25
    assert cut["theory/lambda0"] == whole["theory/lambda0"]


def test_singular_policies(tmp_path: Path, housing: Path, capsys: pytest.CaptureFixture) -> None:
    """p = 8 * 6 = 48 > n = 40: J^T J is singular, so undamped GN needs the configured policy."""
    base = [*SMALL, "--data.root", str(housing), "--model.net.width", "6", "--model.method", "primal",
            "--trainer.max_steps", "3"]
    assert run_train([*base, "--name", "err"], tmp_path) == 1
    assert "singular" in capsys.readouterr().err
    assert run_train([*base, "--name", "stop", "--model.on_singular", "stop"], tmp_path) == 0
    assert read_results(run_dir(tmp_path, "stop"))["fallback_step"] == 0
    assert run_train([*base, "--name", "pinv", "--model.on_singular", "pinv"], tmp_path) == 0
    result = read_results(run_dir(tmp_path, "pinv"))
    assert result["fallback_step"] == 0 and result["global_step"] == 3 and result["exit_step"] == 0


@pytest.mark.parametrize("bad", [["--model.alpha", "-1"], ["--model.rho", "2"], ["--model.method", "qr"],
                                 ["--model.jacobian", "matrix_free"]])
def test_bad_config_exits_with_one_line(tmp_path: Path, housing: Path, bad: list[str],
                                        capsys: pytest.CaptureFixture) -> None:
    assert run_train([*SMALL, "--data.root", str(housing), *bad, "--name", "bad"], tmp_path) == 1
    assert capsys.readouterr().err.startswith("error:")


def test_theory_constants_match_direct_computations() -> None:
    from nets.gauss_newton.theory import theory_constants

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 3, generator=gen, dtype=torch.float64), torch.randn(30, generator=gen, dtype=torch.float64)
    J = TwoLayerTanh(3, 4).jacobian(x).detach()
    c = theory_constants(J, x, y, width=4)
    lam = torch.linalg.eigvalsh(J.T @ J)
    assert c["lambda0"] == pytest.approx(0.5 * float(lam[0]) ** 0.5)
    fit = J @ torch.linalg.lstsq(J, y.unsqueeze(1)).solution.squeeze(1)
    assert c["linearised_lsq_loss"] == pytest.approx(float((y - fit) @ (y - fit)))
    assert c["delta0"] == pytest.approx(float(y @ y))
    # Theorem 5: alpha = L mu / (r (1 - r) lambda0^2) * sqrt(Delta0) / (2 sqrt(2) nu^1.5), r = 1/2, nu = mu = 2
    assert c["alpha_theorem5"] == pytest.approx(c["lip_jacobian"] * 2 / (0.25 * c["lambda0"] ** 2)
                                                * float(y @ y) ** 0.5 / (2 * 2 ** 0.5 * 2 ** 1.5))


def test_autograd_jacobian_path_equals_the_closed_form() -> None:
    module = GaussNewtonModule(TwoLayerTanh(5, 4, init_seed=3), jacobian="autograd")
    x = torch.randn(9, 5, dtype=torch.float64)
    torch.testing.assert_close(module.make_jacobian(x).dense(), module.net.jacobian(x))


def test_scikit_learn_cache_gives_the_same_table_as_the_csv(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")  # scikit-learn's cache format; joblib ships with scikit-learn
    raw = raw_table()
    cache = tmp_path / "cache"
    cache.mkdir()
    # scikit-learn stores the 9 raw columns reordered: value, income, age, rooms, bedrooms, population,
    # households, latitude, longitude
    joblib.dump(raw[:, [8, 7, 2, 3, 4, 5, 6, 1, 0]], cache / "cal_housing_py3.pkz", compress=6)
    a = CaliforniaHousingDataModule(str(write_csv(tmp_path / "csv", raw)), n_train=64, n_test=32)
    b = CaliforniaHousingDataModule(str(cache), n_train=64, n_test=32)
    a.setup(), b.setup()
    torch.testing.assert_close(a.train_xy, b.train_xy)


# ---------------------------------------------------------------------------------------------- LM vs Adam budget
def budget_args(root: Path) -> list[str]:
    return ["--config", "configs/gauss_newton/mlp_california.yaml", "--data.root", str(root), "--data.n_train", "64",
            "--data.n_val", "16", "--data.n_test", "16", "--data.steps_per_epoch", "3",
            "--trainer.callbacks.init_args.seconds", "600", "--trainer.callbacks.init_args.every", "0.001"]


def test_wall_clock_budget_records_curves_and_continues_after_resume(tmp_path: Path) -> None:
    root = write_csv(tmp_path / "data", raw_table(121))
    runs = tmp_path / "runs"
    assert run_train([*budget_args(root), "--name", "cut", "--trainer.max_steps", "4"], runs) == 0
    assert run_train([*budget_args(root), "--name", "cut", "--trainer.max_steps", "9", "--ckpt_path", "last"],
                     runs) == 0
    res = read_results(run_dir(runs, "cut"))
    assert res["budget/steps"] == 9  # steps and training time accumulate across the resume
    curve = res["budget/curve"]
    assert [row[1] for row in curve] == sorted(row[1] for row in curve) and curve[-1][1] == 9
    assert all(np.isfinite(row[2]) and np.isfinite(row[3]) for row in curve)
    assert res["budget/test_rmse"] == curve[-1][3] and res["budget/best_val_rmse"] == min(r[2] for r in curve)


def test_wall_clock_budget_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_csv(tmp_path / "data", raw_table(121))
    assert run_train([*budget_args(root), "--trainer.callbacks.init_args.seconds", "0"], tmp_path / "runs") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "WallClockBudget needs seconds > 0" in err[0]


def test_rate_script_fits_the_asymptotic_slope_above_the_round_off_floor(tmp_path: Path) -> None:
    from scripts.gauss_newton_rates import fitted_slope

    t = np.arange(0, 4.0, 0.01)
    loss = np.maximum(np.exp(-3.0 * t) + 0.5 * np.exp(-9.0 * t), 1e-16)  # slowest mode -3, then a floor
    loss[t > 3.5] = 1e-16
    with open(tmp_path / "metrics.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["step", "train/t", "train/loss"])
        writer.writerows((i, ti, li) for i, (ti, li) in enumerate(zip(t, loss)))
    slope, t_end, final, steps = fitted_slope(tmp_path)
    assert slope == pytest.approx(-3.0, rel=1e-3) and steps == len(t) and final == 1e-16
