#!/usr/bin/env bash
# The test suite (slow tests excluded; add `-m slow` to run only those), then the
# Android demo's JVM core tests and build-file checks (android_demo/test.sh).
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
python -m pytest "$@"
PYTHON=python android_demo/test.sh
