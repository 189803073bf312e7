"""The training loop, its config, run directories and model cards.

Importing this package registers every training-time defense, the certified-training ones of
`adversa.certify.training` included, so `DEFENSES` here lists all that `train` accepts.
"""

from adversa.certify import training as _certified  # noqa: F401  (ibp, crown-ibp, gaussian)
from adversa.defenses import DEFENSES
from adversa.train.card import TrainResult
from adversa.train.config import TrainConfig
from adversa.train.loop import train
from adversa.train.output import load_training_output

__all__ = ["DEFENSES", "TrainConfig", "TrainResult", "load_training_output", "train"]
