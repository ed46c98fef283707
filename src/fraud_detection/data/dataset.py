"""What the data stage hands to the features stage: the rows plus a description of them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from fraud_detection.schema import ClassNames


class DatasetInfo(BaseModel):
    """Describes ``dataset.parquet``: where it came from and the role of each column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["simulator", "csv"]
    target: str
    positive_label: bool | int | str = 1
    class_names: ClassNames = ClassNames()
    time_column: str | None = None
    group_column: str | None = None
    numeric: list[str] = []
    categorical: list[str] = []
    # Kept in the table for traceability but never given to a model.
    passthrough: list[str] = []
    rows: int
    positives: int

    @property
    def positive_share(self) -> float:
        return self.positives / self.rows if self.rows else 0.0
