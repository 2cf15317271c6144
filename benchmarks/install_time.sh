#!/usr/bin/env bash
# Fresh-venv install time: the lock (what `make env` does now) against pip's resolver over
# constraints.txt (what it did before requirements.lock), each with a cold and a warm pip
# cache, on this machine in one run. Writes nothing in the checkout; prints one line a case.
#
#   bash benchmarks/install_time.sh [resolver] [locked]   # both by default: about 15-25 min,
#                                                          # ~3 GB downloaded twice
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(scripts/find_python310.sh)}"
work=$(mktemp -d /tmp/cgd-install-bench.XXXX)
trap 'rm -rf "$work"' EXIT

resolver() {  # the recipe before the lock
  "$1/bin/pip" install -q -U "pip<25"
  "$1/bin/pip" install -c constraints.txt -e ".[test]"
}
locked() {    # make env's recipe
  "$1/bin/pip" install -q --require-hashes --no-deps \
      -r <("$PYTHON" scripts/lock.py select requirements.lock pip setuptools wheel packaging)
  "$1/bin/pip" install -q --require-hashes --no-deps --no-build-isolation -r requirements.lock
  "$1/bin/pip" install -q --no-deps --no-build-isolation --use-pep517 -e .
}

run() {  # run CASE RECIPE CACHE_DIR
  local venv="$work/venv-$1"
  rm -rf "$venv"; "$PYTHON" -m venv "$venv"
  local start=$(date +%s.%N)
  PIP_CACHE_DIR="$3" "$2" "$venv" > "$work/$1.log" 2>&1 || { echo "$1 FAILED: $work/$1.log"; cat "$work/$1.log" | tail -20; exit 1; }
  local end=$(date +%s.%N)
  local backtracks=$(grep -c "is looking at multiple versions" "$work/$1.log" || true)
  printf '%-14s %7.1f s   resolver backtracking messages: %s   load %s\n' "$1" \
      "$(echo "$end - $start" | bc)" "$backtracks" "$(cut -d' ' -f1-3 /proc/loadavg)"
  rm -rf "$venv"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -m), pip cache warm = the user's cache"
for recipe in ${*:-resolver locked}; do
  run "$recipe-cold" "$recipe" "$work/cache-$recipe"   # an empty cache of its own
  run "$recipe-warm" "$recipe" "$work/cache-$recipe"   # the same cache, now filled
done
