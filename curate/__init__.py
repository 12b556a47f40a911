"""curate: clean preference data for reward models, and train the reward model on it."""

__version__ = "0.1.0"
