#!/usr/bin/env bash
# Step-time errors of a profile on a committed validation folder whose measurements predate today's plans
# (`cpsim validate --measured` refuses those: the IR gained ops since, e.g. the dQ cast), so per-op rows cannot be
# paired but steps can: each scenarios/X.json is predicted now and compared with measured/X.json's step time.
# Usage: scripts/step_errors.sh <validation folder> <profile>   -> a markdown table with provenance on stdout
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: scripts/step_errors.sh <validation folder> <profile>}
profile=${2:?usage: scripts/step_errors.sh <validation folder> <profile>}
bin=${CPSIM_BIN:-./build/app/cpsim}
[ -x "$bin" ] || { echo "error: $bin not built (run scripts/setup.sh)" >&2; exit 2; }
[ -d "$dir/scenarios" ] && [ -d "$dir/measured" ] || { echo "error: $dir has no scenarios/ and measured/" >&2; exit 2; }
[ -f "$profile" ] || { echo "error: profile '$profile' not found" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "# Step errors of \`$profile\` on \`$dir\`"
echo
echo "- command: \`scripts/step_errors.sh $dir $profile\`; git $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD || echo ' (+local changes)'), $(date -u +%Y-%m-%d)"
echo
echo "| scenario | predicted ms | measured ms | error |"
echo "|---|---:|---:|---:|"
for f in "$dir"/scenarios/*.json; do
  n=$(basename "$f" .json)
  m="$dir/measured/$n.json"
  [ -f "$m" ] || continue
  "$bin" simulate "$f" --profile "$profile" --json "$tmp/p.json" >/dev/null
  python3 - "$tmp/p.json" "$m" "$n" <<'PY' | tee -a "$tmp/rows"
import json, sys
p = json.load(open(sys.argv[1]))["step_time_s"]
m = json.load(open(sys.argv[2]))["step_time_s"]
print(f"| {sys.argv[3]} | {p * 1e3:.2f} | {m * 1e3:.2f} | {100 * (p / m - 1):+.2f} % |")
PY
done
python3 - "$tmp/rows" <<'PY'
import sys
e = sorted(abs(float(l.split("|")[4].split()[0])) for l in open(sys.argv[1]))
if not e:
    sys.exit("error: no scenario has a measured file of the same name")
p95 = e[min(len(e) - 1, int(0.95 * len(e) + 0.5) - 1)] # nearest rank
print(f"\n|error| over {len(e)} steps: median {e[len(e) // 2] if len(e) % 2 else (e[len(e) // 2 - 1] + e[len(e) // 2]) / 2:.2f} %, p95 {p95:.2f} %, max {e[-1]:.2f} %")
PY
