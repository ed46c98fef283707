"""Scheduling the project's jobs."""
