"""Fraud detection: data, features, models and evaluation (pure functions)."""
