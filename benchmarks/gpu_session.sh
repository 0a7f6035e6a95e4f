#!/usr/bin/env bash
# One GPU session (15 minutes in all), prepared: install, the CUDA tests, the full suite on CUDA.
#
#   bash benchmarks/gpu_session.sh                 # all three steps (about 11 minutes at most)
#   bash benchmarks/gpu_session.sh install tests   # or in parts, e.g. under a 10-minute limit per command,
#   bash benchmarks/gpu_session.sh install suite   # then this (installing again is quick when nothing is missing)
#
# Every log and result goes to $OUT (default ./gpu-results): env.txt, install.log, tests.log, suite.log and
# suite-cuda-<gpu>.json. Copy the JSON into benchmarks/results/ and run `python -m benchmarks.render`.
#
# Offline machines: a missing package (captum, on a bare CUDA image) can be brought as wheels in .whl/ at the
# repository root (`pip download --no-deps -d .whl captum==0.9.0`); they are installed into /tmp/site, no index.
# Time limits (seconds) can be changed: TESTS_TIMEOUT (240), SUITE_TIMEOUT (420); the suite starts no case after
# SUITE_TIMEOUT - 30 s, and it writes its JSON after every case, so a run cut short keeps what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
TESTS_TIMEOUT="${TESTS_TIMEOUT:-240}"
SUITE_TIMEOUT="${SUITE_TIMEOUT:-420}"
STEPS="${*:-install tests suite}"
export PYTHONUNBUFFERED=1
status=0

step_install() {
  {
    echo "== $(date -u +%FT%TZ) install"
    if ls .whl/*.whl >/dev/null 2>&1; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
      export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    if "$PYTHON" -c "import torch, torchvision, captum, pytest" 2>/dev/null; then
      echo "torch, torchvision, captum and pytest present: zf_attr from this checkout, nothing else installed"
      "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . || echo "(no editable install: PYTHONPATH)"
    else
      echo "installing zf_attr with its test extras (needs a package index)"
      "$PYTHON" -m pip install -q -e ".[test]" || { echo "INSTALL FAILED"; return 1; }
    fi
  } >>"$OUT/install.log" 2>&1
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  {
    date -u +%FT%TZ
    nvidia-smi || true
    "$PYTHON" - <<'EOF'
import platform, torch, torchvision
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__)
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "cuda", torch.version.cuda)
import captum, zf_attr
print("captum", captum.__version__, "zf_attr", zf_attr.__version__, zf_attr.__file__)
EOF
  } >"$OUT/env.txt" 2>&1 || { echo "environment check failed: see $OUT/env.txt"; return 1; }
}

step_tests() {
  # the test files that hold CUDA tests, and in them the CUDA tests and those that follow the input's device
  # (TESTS_ARGS replaces that selection, e.g. TESTS_ARGS="-n 8 tests" for the whole suite with pytest-xdist)
  local selection
  selection="${TESTS_ARGS:-$(grep -l "torch.cuda.is_available" tests/test_*.py | tr '\n' ' ') -k 'cuda or device'}"
  echo "== $(date -u +%FT%TZ) python -m pytest -rs $selection" >"$OUT/tests.log"
  eval timeout "$TESTS_TIMEOUT" "$PYTHON" -m pytest -p no:cacheprovider -rs -q "$selection" >>"$OUT/tests.log" 2>&1
  local rc=$?
  if grep -q "SKIPPED.*CUDA" "$OUT/tests.log"; then
    echo "CUDA TESTS SKIPPED: see $OUT/tests.log" | tee -a "$OUT/tests.log"
    rc=1
  fi
  echo "== tests exit status $rc" >>"$OUT/tests.log"
  return $rc
}

step_suite() {
  local name
  name=$("$PYTHON" -c "import torch; from zf_attr.benchmarking import short_name; print(short_name(torch.cuda.get_device_name(0)))")
  timeout "$SUITE_TIMEOUT" "$PYTHON" -m benchmarks --device cuda --time-budget $((SUITE_TIMEOUT - 30)) \
    --out "$OUT/suite-cuda-${name}.json" >"$OUT/suite.log" 2>&1
  local rc=$?
  echo "== suite exit status $rc" >>"$OUT/suite.log"
  return $rc
}

for step in $STEPS; do
  echo "== $step"
  "step_$step" || { status=1; echo "step $step failed (exit status kept 1; the other steps still run)"; }
done
ls -l "$OUT"
tail -n 5 "$OUT"/tests.log "$OUT"/suite.log 2>/dev/null
exit $status
