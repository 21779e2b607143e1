"""Rebuild a trained WGAN-GP run's generator and datamodule from its run folder (config.yaml + last.ckpt)."""
import importlib
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from torch import nn


def instantiate(spec: dict[str, Any], **overrides: Any) -> Any:
    """``{class_path, init_args}`` -> object (nested specs are instantiated too)."""
    module, _, name = spec["class_path"].rpartition(".")
    args = {k: instantiate(v) if isinstance(v, dict) and "class_path" in v else v
            for k, v in (spec.get("init_args") or {}).items()}
    return getattr(importlib.import_module(module), name)(**{**args, **overrides})


def load_run(run_dir: Path, data_root: Optional[str] = None,
             ckpt: str = "last.ckpt") -> tuple[nn.Module, nn.Module, Any]:
    """(generator, critic, set-up datamodule) of a run; weights from ``checkpoints/<ckpt>``."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    model = config["model"]["init_args"]
    generator, critic = instantiate(model["generator"]), instantiate(model["critic"])
    state = torch.load(run_dir / "checkpoints" / ckpt, map_location="cpu", weights_only=False)["state_dict"]
    for prefix, net in (("generator.", generator), ("critic.", critic)):
        net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    data = instantiate(config["data"], **({"root": data_root} if data_root else {}))
    data.setup("fit")
    return generator.eval(), critic, data


def training_images(data: Any, limit: Optional[int] = None) -> torch.Tensor:
    """Float [0, 1] training images (N, C, H, W), the first ``limit`` of them."""
    from callbacks.gda_gan import real_images

    return torch.cat([b.float() / 255 for b in real_images(data.train_set, limit, 500)])
