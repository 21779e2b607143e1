"""Clusters: a preempted SLURM job (SIGUSR1, Lightning's auto-requeue) continues its run when requeued, without
--ckpt_path; a 2-node torchrun on localhost (gloo, one process per node) logs what one process logs."""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import QUIET, ROOT, python, read_metrics, read_results, run_dir

ARGS = ["--config", "configs/default.yaml", "--data.max_train_samples", "600", "--data.batch_size", "10",
        "--data.val_fraction", "0.02", "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1",
        "--checkpoint_every_n_steps", "10", "--trainer.limit_test_batches", "2"]


def slurm_env(tmp_path: Path, restarts: int) -> dict[str, str]:
    """What SLURM sets for a one-task batch job (and its requeue), with a fake `scontrol` that records the call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    scontrol.chmod(0o755)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1",
            "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODELIST": "localhost",
            "SLURM_RESTART_COUNT": str(restarts), "WANDB_MODE": "offline"}


def launch(args: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen:
    cmd = [python(), "train.py", *args, "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar",
           "false", "--trainer.enable_model_summary", "false"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_requeued_slurm_job_continues_its_run(tmp_path: Path) -> None:
    whole = launch([*ARGS, "--name", "whole", "--wandb", "false"], tmp_path, {**os.environ, "OMP_NUM_THREADS": "1"})
    job = launch([*ARGS, "--name", "job"], tmp_path, slurm_env(tmp_path, 0))
    out = run_dir(tmp_path, "job")
    ckpt, deadline = out / "checkpoints" / "last.ckpt", time.time() + 300
    while time.time() < deadline and job.poll() is None:
        if ckpt.is_file() and torch.load(ckpt, weights_only=True)["global_step"] >= 30:
            job.send_signal(signal.SIGUSR1)  # SLURM's warning before preemption
            break
        time.sleep(0.05)
    while time.time() < deadline and job.poll() is None and not (tmp_path / "scontrol.log").is_file():
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)  # the preemption itself
    job.wait()
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert not (out / "results.json").exists()
    wandb_id = (out / "wandb_id").read_text()
    requeued = launch([*ARGS, "--name", "job"], tmp_path, slurm_env(tmp_path, 1))  # the same command, no --ckpt_path
    assert requeued.wait(timeout=300) == 0 and whole.wait(timeout=300) == 0, requeued.stderr.read()[-2000:]
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["version_0"]
    assert (out / "wandb_id").read_text() == wandb_id and len(list(out.glob("wandb/offline-run-*"))) == 2
    assert read_results(out)["global_step"] == read_results(run_dir(tmp_path, "whole"))["global_step"]
    assert read_metrics(out) == read_metrics(run_dir(tmp_path, "whole"))  # nothing repeated, nothing lost


@pytest.mark.slow
def test_two_node_torchrun_on_localhost_logs_what_one_process_logs(tmp_path: Path) -> None:
    args = [*ARGS[:-4], "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.limit_test_batches",
            "2", *QUIET]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    one = subprocess.run([python(), "train.py", *args, "--name", "one", "--trainer.default_root_dir", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    nodes = [subprocess.Popen(["torchrun", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                               "--master-addr", "127.0.0.1", "--master-port", port, "train.py", *args,
                               "--trainer.num_nodes", "2", "--trainer.devices", "1", "--name", "two",
                               "--trainer.default_root_dir", str(tmp_path)],
                              cwd=ROOT, env={**env, "PATH": f"{Path(python()).parent}:{env['PATH']}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for node in nodes:
        assert node.wait(timeout=600) == 0, node.stderr.read()[-2000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["version_0"]
    one_rows, two_rows = (read_metrics(run_dir(tmp_path, n)) for n in ("one", "two"))
    assert [r["step"] for r in one_rows] == [r["step"] for r in two_rows]
    for a, b in zip(one_rows, two_rows):
        for key in a:
            if a[key] and key != "epoch":
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6), key
