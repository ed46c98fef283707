"""The shared-services stack: PostgreSQL, an S3 store (SeaweedFS) and an MLflow tracking
server on them, started on 127.0.0.1 as local processes (no Docker) by ``python -m stack``."""
