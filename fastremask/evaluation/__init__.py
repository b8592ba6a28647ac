"""Evaluation: exactly checkable tasks, the demo model's training, ``fastremask eval`` and the
lm-evaluation-harness adapter."""
