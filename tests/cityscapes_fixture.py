"""A tiny Cityscapes in the official on-disk layout: leftImg8bit/<split>/<city>/*_leftImg8bit.png and
gtFine/<split>/<city>/*_gtFine_labelIds.png (8-bit label ids), 2:1 images like the 2048x1024 originals."""
from pathlib import Path

import numpy as np
from PIL import Image

# label id -> colour of its region; road, sidewalk, building, vegetation, sky, car, and ids that map to 255
REGIONS = {7: (128, 64, 128), 8: (244, 35, 232), 11: (70, 70, 70), 21: (107, 142, 35), 23: (70, 130, 180),
           26: (0, 0, 142), 0: (0, 0, 0), 4: (20, 20, 20)}
CITIES = {"train": ["aachen", "bochum"], "val": ["frankfurt"]}


def label_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Sky above buildings/vegetation above road with a sidewalk strip, a car box, unlabeled borders."""
    ids = np.full((height, width), 23, dtype=np.uint8)
    horizon = height // 3 + rng.integers(-2, 3)
    ids[horizon:, :] = 11
    ids[horizon:, rng.integers(0, width // 2):width // 2 + rng.integers(0, width // 2)] = 21
    road = 2 * height // 3 + rng.integers(-2, 3)
    ids[road:, :] = 7
    ids[road:road + 2, :] = 8
    y, x = rng.integers(road, height - 3), rng.integers(0, width - 8)
    ids[y:y + 3, x:x + 8] = 26
    ids[:, :1] = 0  # rectification border style: unlabeled
    ids[-1:, :] = 4
    return ids


def write_cityscapes(root: Path, per_city: int = 3, height: int = 32, width: int = 64, seed: int = 0) -> Path:
    """``per_city`` images per city (2 train cities, 1 val city); returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, cities in CITIES.items():
        for city in cities:
            images, labels = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            images.mkdir(parents=True, exist_ok=True)
            labels.mkdir(parents=True, exist_ok=True)
            for k in range(per_city):
                stem = f"{city}_{k:06d}_000019"
                ids = label_image(rng, height, width)
                colours = np.zeros((height, width, 3), dtype=np.int64)
                for label, colour in REGIONS.items():
                    colours[ids == label] = colour
                noisy = np.clip(colours + rng.integers(-20, 21, colours.shape), 0, 255).astype(np.uint8)
                Image.fromarray(noisy).save(images / f"{stem}_leftImg8bit.png")
                Image.fromarray(ids).save(labels / f"{stem}_gtFine_labelIds.png")
    return root
