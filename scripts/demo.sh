#!/usr/bin/env bash
# Offline, CPU-only: train DRNet on digits, export ONNX + ExecuTorch bundles, run and profile them.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
exec python scripts/demo.py "$@"
