#!/usr/bin/env bash
# The test suite (slow tests excluded; add `-m slow` to run only those), then the
# Android demo's JVM core tests and build-file checks (android_demo/test.sh).
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
# A test process keeps about one core busy (exports and training steps are mostly single-threaded Python), so one
# worker per core; a file's tests stay in one worker, which builds that file's fixtures once.
python -m pytest -n "${TEST_WORKERS:-auto}" --dist loadfile "$@"
PYTHON=python android_demo/test.sh
