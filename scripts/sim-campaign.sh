#!/usr/bin/env bash
# Runs a seed campaign of every simulator suite (volume, pair, cycles, link, migration) over a fresh range,
# in the background, on a frozen copy of the build (rebuilding meanwhile does not change what runs).
#
#   scripts/sim-campaign.sh [--start K] [--count N] [--suites "volume pair cycles link migration"] [--jobs J] [--out DIR]
#
# Defaults: a start drawn from the clock (above the ranges CI runs), 100000 seeds per suite, 2 jobs.
# Each suite's range is cut into chunks of 5000 seeds run J at a time; DIR/SUITE-START.log holds each
# chunk's output, DIR/summary.txt the totals and every failing seed with the command that reproduces
# it. Prints DIR and the campaign's PID, then returns; `cat DIR/summary.txt` when it is done
# (DIR/done appears then). Needs `npm run build` first.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(( ($(date +%s) % 100000) * 1000 + 1000000 ))
count=100000
suites="volume pair cycles link migration"
jobs=2
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --start) start=$2; shift 2 ;;
    --count) count=$2; shift 2 ;;
    --suites) suites=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -f dist/src/bin/sim.js ] || { echo "dist/src/bin/sim.js missing: run npm run build first" >&2; exit 2; }
out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/tidemark-campaign-XXXXXX")}
mkdir -p "$out"
cp -r dist "$out/dist"
ln -sfn "$PWD/node_modules" "$out/node_modules"
ln -sfn "$PWD/package.json" "$out/package.json"
ln -sfn "$PWD/build" "$out/build"

chunk=5000
run_campaign() {
  local began; began=$(date +%s)
  for suite in $suites; do
    local k=0
    while [ "$k" -lt "$count" ]; do
      local n=$(( count - k < chunk ? count - k : chunk ))
      local s=$(( start + k ))
      ( cd "$out" && node dist/src/bin/sim.js --suite "$suite" --seeds "$n" --start "$s" > "$out/$suite-$s.log" 2>&1 || true ) &
      k=$(( k + n ))
      while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    done
  done
  wait || true
  {
    echo "tidemark sim campaign: seeds $start..$(( start + count - 1 )) of each suite ($suites), $(( $(date +%s) - began )) s"
    for suite in $suites; do
      local passed=0 failed=0 broken=0
      for f in "$out/$suite"-*.log; do
        local line; line=$(grep -E '^(PASS|FAIL):' "$f" | tail -1 || true)
        if [ -z "$line" ]; then broken=$(( broken + 1 )); continue; fi
        local ran; ran=$(sed -E 's/^(PASS|FAIL): ([0-9]+) .*/\2/' <<<"$line")
        local bad; bad=$(sed -E 's/^(PASS|FAIL): [0-9]+ [a-z]* ?seeds, ([0-9]+) failed.*/\2/' <<<"$line")
        passed=$(( passed + ran - bad )); failed=$(( failed + bad ))
      done
      echo "$suite: $(( passed + failed )) seeds, $passed passed, $failed failed$( [ "$broken" -gt 0 ] && echo ", $broken chunk(s) ended without a summary line (crash?)" )"
    done
    echo
    grep -h -A2 '^FAIL seed' "$out"/*.log || echo "no failing seed"
  } > "$out/summary.txt"
  touch "$out/done"
}
setsid bash -c "$(declare -f run_campaign); out='$out' start=$start count=$count suites='$suites' jobs=$jobs chunk=$chunk; run_campaign" </dev/null >"$out/campaign.log" 2>&1 &
echo "campaign: $out (pid $!), seeds $start..$(( start + count - 1 )) per suite: $suites"
