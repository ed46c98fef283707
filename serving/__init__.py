"""The prediction service: FastAPI serving the champion model (see README "Serving")."""
