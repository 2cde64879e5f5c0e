"""Serving a bundle within budgets: the one budget solver (costs), budgets through the device's latency table, and
the controller that holds a latency objective under load."""
