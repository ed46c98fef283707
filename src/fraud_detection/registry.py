"""The registry's names, light enough for anything to import (MLflow is not needed):
the aliases the registry rule gives (src/fraud_detection/io/tracking.py applies it), the
URI of a model's champion, and the content fingerprint a model is registered under."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

CHAMPION, CHALLENGER = "champion", "challenger"
# The model metadata key (MLmodel) and the registry version tag that carry the fingerprint.
FINGERPRINT_KEY = "model_fingerprint"
# Scores are hashed at this many decimals: far below any decision, above float noise.
_SCORE_DECIMALS = 10


def champion_uri(name: str) -> str:
    """``models:/<name>@champion``: what `make serve` and `make export-model` load."""
    return f"models:/{name}@{CHAMPION}"


def scores_fingerprint(scores: ArrayLike) -> str:
    """A digest of a model's scores on fixed rows: what the model does, not how its file
    happens to be laid out (MLmodel carries a creation time and a random uuid)."""
    rounded = np.round(np.asarray(scores, dtype=np.float64), _SCORE_DECIMALS) + 0.0
    return hashlib.sha256(rounded.tobytes()).hexdigest()[:16]


def model_fingerprint(parts: Mapping[str, str]) -> str:
    """The identity of a trained model: a digest of what it was made from and what it does.

    The same data, params and code give the same fingerprint on any machine, so a rerun
    finds its own registry version instead of registering a twin, and the drift reference
    and the prediction log can name the model without a registry version, which only a
    store knows (and which is different in every store)."""
    canonical = json.dumps(dict(parts), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
