"""Package versions recorded in every report, card and manifest, for reproducibility."""

from __future__ import annotations

import platform

import numpy
import torch


def versions() -> dict[str, str]:
    """adversa, torch, numpy and Python versions, and the platform string."""
    from adversa import __version__

    return {
        "adversa": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
