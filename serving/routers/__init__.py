"""One router per concern: service state, predictions, metrics."""
