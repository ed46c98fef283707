"""Data sources: the transaction simulator and user CSV files."""
