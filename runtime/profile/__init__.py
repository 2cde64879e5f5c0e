"""Measuring a bundle on a device: `python -m runtime.profile`, its latency table, the report that views it,
per-op breakdowns and comparisons across devices. Host and device alike; plots need matplotlib."""
