"""`fraud`: a seeded synthetic card-transaction table, imbalanced like real fraud data.

No real fraud data ships offline, so this generator stands in for it (the built-in data set
"fraud"). It is a pure function of `FRAUD_SEED`: 4,000 transactions, about 5 % fraudulent
(label 1), with

- numeric: `amount` (log-normal, currency units), `distance_km` (from home, log-normal);
- integer: `hour` (0-23), `tx_last_24h` (Poisson count, increase-only for an attacker: past
  transactions cannot be undone), `account_age_days` (immutable);
- one-hot categorical: `merchant=*` (5 categories) and `channel=*` (online, pos, atm).

Fraud is drawn from a logistic model: large amounts, night hours, many recent transactions,
young accounts, long distances, the online channel and the "electronics" and "gift_cards"
merchants raise its odds. Features are min-max scaled with the train split's range, as for
"breast-cancer" (`meta["scaler"]`, so `adversa.data.unscale` gives original units), and
`meta["constraints"]` names the constraint of each feature; `fraud_constraints(dataset)`
turns it into `FeatureConstraints`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from adversa.data.dataset import Dataset
from adversa.data.splits import scaled_table
from adversa.rng import make_generator

FRAUD_SEED = 0  # seeds the generator; the table is a pure function of it
N_ROWS = 4000
MERCHANTS = ("grocery", "fuel", "travel", "electronics", "gift_cards")
CHANNELS = ("online", "pos", "atm")
NUMERIC = ("amount", "distance_km", "hour", "tx_last_24h", "account_age_days")
FEATURES = (
    NUMERIC + tuple(f"merchant={m}" for m in MERCHANTS) + tuple(f"channel={c}" for c in CHANNELS)
)
CONSTRAINTS: dict[str, Any] = {
    "integer": ["hour", "tx_last_24h", "account_age_days"],
    "immutable": ["account_age_days"],
    "increase_only": ["tx_last_24h"],
    "categorical": [
        [f"merchant={m}" for m in MERCHANTS],
        [f"channel={c}" for c in CHANNELS],
    ],
    "lower": {"amount": 0.0, "distance_km": 0.0},  # original units
}


@functools.cache
def fraud_arrays(seed: int = FRAUD_SEED, n: int = N_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in original units: x float64 (n, 13) in `FEATURES` order, y int64 (n,)."""
    gen = make_generator(seed)

    def randn() -> torch.Tensor:
        return torch.randn(n, generator=gen, dtype=torch.float64)

    amount = torch.exp(3.5 + 1.0 * randn()).round(decimals=2)
    distance = torch.exp(1.5 + 1.2 * randn()).round(decimals=1)
    hour = torch.randint(0, 24, (n,), generator=gen).double()
    tx = torch.poisson(torch.full((n,), 2.0, dtype=torch.float64), generator=gen)
    age = torch.randint(1, 3650, (n,), generator=gen).double()
    merchant = torch.multinomial(
        torch.tensor([0.35, 0.25, 0.15, 0.15, 0.10]), n, replacement=True, generator=gen
    )
    channel = torch.multinomial(torch.tensor([0.4, 0.5, 0.1]), n, replacement=True, generator=gen)
    night = ((hour <= 5) | (hour >= 23)).double()
    logit = (
        -4.7
        + 0.9 * (amount.log() - 3.5)
        + 1.2 * night
        + 0.45 * tx
        - 0.8 * (age / 365.0).clamp(max=5).sub(1.0)
        + 0.35 * distance.log1p()
        + 0.9 * (channel == 0).double()
        + 1.0 * ((merchant == 3) | (merchant == 4)).double()
    )
    y = torch.bernoulli(torch.sigmoid(logit), generator=gen).long()
    x = torch.cat(
        [
            torch.stack([amount, distance, hour, tx, age], 1),
            torch.nn.functional.one_hot(merchant, len(MERCHANTS)).double(),
            torch.nn.functional.one_hot(channel, len(CHANNELS)).double(),
        ],
        1,
    )
    return x.numpy(), y.numpy()


def load_fraud(split: str) -> Dataset:
    """The "fraud" built-in: `split` is "train", "test" or "all" (stratified, seeded)."""
    x, y = fraud_arrays()
    scaled, ys, meta = scaled_table(
        x,
        y,
        split,
        source=f"adversa.data.fraud (synthetic, seed {FRAUD_SEED})",
        feature_names=FEATURES,
    )
    meta["constraints"] = CONSTRAINTS
    return Dataset(
        name="fraud",
        x=torch.tensor(scaled),
        y=torch.tensor(ys),
        num_classes=2,
        kind="tabular",
        class_names=("legit", "fraud"),
        feature_names=FEATURES,
        meta=meta,
    )
