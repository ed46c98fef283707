"""The only modules with side effects: files on disk and the MLflow store."""
