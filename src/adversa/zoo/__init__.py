"""The model zoo: named recipes (architecture from `adversa.nets`, data, defense) trained
locally on built-in data and cached.

Example::

    module = load_zoo_model("mnist-cnn-pgd")     # trains once (minutes), then loads
    model = adversa.Model(module, num_classes=10, name="mnist-cnn-pgd")
"""

from adversa.zoo.cache import (
    build_zoo_module,
    cache_dir,
    load_zoo_entry,
    load_zoo_model,
    read_card,
    train_zoo_entry,
    zoo_paths,
)
from adversa.zoo.entries import ZOO_ENTRIES, ZooEntry, list_models, zoo_entry

__all__ = [
    "ZOO_ENTRIES",
    "ZooEntry",
    "build_zoo_module",
    "cache_dir",
    "list_models",
    "load_zoo_entry",
    "load_zoo_model",
    "read_card",
    "train_zoo_entry",
    "zoo_entry",
    "zoo_paths",
]
