"""The table a classifier's predictions become: the predicted class and one probability per class."""

from collections.abc import Sequence

import pandas as pd
import torch


def class_table(predictions: torch.Tensor, classes: Sequence[str], index: pd.Index | None = None) -> pd.DataFrame:
    """`prediction` and `prob_<class>` columns from probabilities: (N,) = P(second class) or (N, classes)."""
    probs = predictions.reshape(len(predictions), -1).float()
    if probs.shape[1] == 1:  # binary: P(second class)
        probs = torch.cat([1 - probs, probs], dim=1)
    table = pd.DataFrame({"prediction": [classes[i] for i in probs.argmax(dim=1).tolist()]}, index=index)
    for i, name in enumerate(classes):
        table[f"prob_{name}"] = probs[:, i].numpy()
    return table
