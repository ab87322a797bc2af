#!/usr/bin/env bash
# Predicts every scenario of a folder with the analytic engine and prints a markdown table with
# provenance (git SHA, command, date, machine): the prediction half of a predicted-vs-measured validation,
# committed before the GPUs that would measure it are available.
# Usage: scripts/predict_folder.sh <folder> [extra simulate args]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: scripts/predict_folder.sh <folder> [simulate args]}
shift
bin=./build/app/cpsim
[ -x "$bin" ] || { echo "error: $bin not built (run scripts/setup.sh)" >&2; exit 2; }
echo "# Predictions for $dir"
echo
echo "- command: \`scripts/predict_folder.sh $dir $*\`"
echo "- git SHA: $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- model simulator hardware app || echo ' (+local changes)')"
echo "- date: $(date -u +%Y-%m-%d), engine: analytic, roofline cost model (not calibrated)"
echo "- machine: $(uname -n), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), one simulate at a time"
echo
echo "| scenario | scheme | step ms | compute ms (busiest rank) | comm ms | exposed comm ms | exposed % | peak GiB |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for f in "$dir"/*.json; do
  if ! out=$("$bin" simulate "$f" "$@" 2>&1); then
    echo "| $(basename "$f" .json) | | error: ${out//|/\\|} | | | | | |"
    continue
  fi
  echo "$out" | awk -v name="$(basename "$f" .json)" '
    /^scenario:/ { for (i = 1; i <= NF; ++i) if ($i == "scheme:") scheme = $(i + 1) }
    /^step time:/ { step = $3 }
    /^ *[0-9]+ / && $2 + 0 >= comp { comp = $2; comm = $3; ex = $4 }
    /^ *[0-9]+ / && $6 + 0 > mem { mem = $6 }
    END { printf "| %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f |\n", name, scheme, step, comp, comm, ex, 100 * ex / step, mem }'
done
