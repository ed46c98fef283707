"""`python -m pipelines.champion_uri`: the registry URI of params.yaml's champion.

`make serve` serves it unless SERVING_MODEL_URI says otherwise, so renaming the model in
params.yaml (evaluate.registered_model_name) renames what is served, too.
"""

from __future__ import annotations

import sys

from fraud_detection.errors import USER_ERRORS
from fraud_detection.io.files import load_params
from fraud_detection.registry import champion_uri
from fraud_detection.workspace import PARAMS


def main() -> int:
    try:
        print(champion_uri(load_params(PARAMS).evaluate.registered_model_name))
    except USER_ERRORS as error:
        print(f"champion_uri: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
