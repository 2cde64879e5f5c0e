"""What is on disk, torch-free: the bundle (manifest, artifacts, each rule's section through runtime/rules), the
devices file, and the two tables (the device's latency table, Resizable-NAS's lookup table)."""
