"""Whole runs of the pipeline, chaining the stages as a user's recipe would: `demo` (the
embedded sample, from photos scikit-image ships, through every stage to a report)."""
