"""The registry's names, light enough for anything to import (MLflow is not needed):
the aliases the registry rule gives (src/fraud_detection/io/tracking.py applies it) and
the URI of a model's champion."""

from __future__ import annotations

CHAMPION, CHALLENGER = "champion", "challenger"


def champion_uri(name: str) -> str:
    """``models:/<name>@champion``: what `make serve` and `make export-model` load."""
    return f"models:/{name}@{CHAMPION}"
