"""Serving a bundle within budgets and deadlines: the one budget solver (costs), budgets through the device's latency
table (budgets), the deadline policy (deadline) with its queue and worker thread (server), camera streams (stream),
the clocks they run on (clock), and the queue-driven controller kept as a baseline (controller)."""
