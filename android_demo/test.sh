#!/usr/bin/env bash
# The Android demo's checks without Gradle (Maven and Google's repositories are
# unreachable here): compile the plain-JVM core and run its tests, with kotlinc
# from the npm package kotlin-compiler and JUnit 4 from Debian; check the build
# files; and read the benchmark report the tests write with the host's report
# reader. The last line reads "N passed, N failed".
#
# Environment: KOTLINC (a kotlinc to use instead of the npm one), PYTHON (the
# interpreter with the project installed; default python).
set -euo pipefail
demo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
core="$demo/core"
tools="$demo/.tools"
build="$demo/build/core"
KOTLIN_VERSION=2.4.20  # the compiler; the code is checked against Kotlin 2.0, the Gradle build's language level

kotlinc="${KOTLINC:-}"
if [[ -z "$kotlinc" ]]; then
    kotlinc="$tools/node_modules/kotlin-compiler/bin/kotlinc"
    if [[ ! -x "$kotlinc" ]]; then
        echo "installing kotlin-compiler@$KOTLIN_VERSION from npm into $tools" >&2
        npm install --silent --no-save --prefix "$tools" "kotlin-compiler@$KOTLIN_VERSION" >&2
    fi
fi
junit=/usr/share/java/junit4.jar
hamcrest=/usr/share/java/hamcrest-core.jar
if [[ ! -f "$junit" ]]; then
    if [[ $(id -u) -eq 0 ]]; then
        echo "installing junit4 from Debian" >&2
        apt-get install -y -qq junit4 >/dev/null
    else
        echo "android_demo/test.sh: JUnit 4 is missing; install it with: sudo apt-get install junit4" >&2
        exit 2
    fi
fi
kotlin_lib="$(dirname "$(readlink -f "$kotlinc")")/../lib"

rm -rf "$build" && mkdir -p "$build"
flags=(-language-version 2.0 -api-version 2.0 -Xsuppress-version-warnings -jvm-target 11 -Werror)
"$kotlinc" "${flags[@]}" "$core/src/main/kotlin" -d "$build/core.jar"
"$kotlinc" "${flags[@]}" -cp "$build/core.jar:$junit" "$core/src/test/kotlin" -d "$build/tests.jar"
python="${PYTHON:-python}"
"$python" "$demo/check_build_files.py" --kotlinc "$kotlinc"
java -Dgolden.dir="$demo/golden" -Dreport.out="$build/report.json" \
    -cp "$build/core.jar:$build/tests.jar:$junit:$hamcrest:$kotlin_lib/kotlin-stdlib.jar" \
    org.adaptiveedge.core.RunTestsKt "$build/tests.jar"
# The phone's report, read by the host's reader (runtime/profile/report.py), field by field.
"$python" - "$build/report.json" <<'PY' >/dev/null
import sys
from runtime.profile.report import format_report, read_report
format_report(read_report(sys.argv[1]))
PY
