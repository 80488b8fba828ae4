#!/usr/bin/env bash
# test.py against the reference's test.py in one interleaved run (docs/performance.md, "test.py against the reference").
#   scripts/bench_vs_reference.sh [REFDIR] [options of scripts/bench_vs_reference.py, e.g. --repeats 3 --quick]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
ref="${1:-/tmp/ref}"; shift || true
[ -f "$ref/test.py" ] || "$here/../shared/anchors/reference.sh" "$ref"
cd "$here" && exec python scripts/bench_vs_reference.py --ref "$ref" "$@"
