"""Errors caused by the user's input or environment, each with a message that says what
is wrong and how to fix it. Kept free of heavy imports so every stage can load them fast."""


class ParamsError(ValueError):
    """params.yaml is not valid; the message names every offending key."""


class DataValidationError(ValueError):
    """Input data is unusable; the message names the column or value and the fix."""


class SchemaMismatchError(ValueError):
    """A table does not have the columns or types the feature schema promises."""


class MissingInputError(FileNotFoundError):
    """An input a stage needs does not exist; the message says which stage makes it."""


class CandidateError(ValueError):
    """A model entry in params.yaml cannot be built; the message names the key."""


class TrackingError(RuntimeError):
    """The MLflow store cannot be used; the message says which URI and what to do."""


class ClusterError(RuntimeError):
    """The Dask cluster cannot be reached or cannot run the work; the message says why."""


class ModelLoadError(RuntimeError):
    """A model folder or URI cannot be served; the message says what is wrong and the fix."""


USER_ERRORS: tuple[type[Exception], ...] = (
    ParamsError,
    DataValidationError,
    SchemaMismatchError,
    MissingInputError,
    CandidateError,
    TrackingError,
    ClusterError,
    ModelLoadError,
)
