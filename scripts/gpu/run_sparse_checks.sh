#!/usr/bin/env bash
# `cpsim run --check` of the sparse and gather-style schedules (PIT, DSV, TE p2p, CQS, DCP) on a lent GPU machine:
# every scenario of scenarios/sparse_checks/list.txt ("ranks file" per line) whose ranks fit the machine's GPUs;
# a plan with more ranks than GPUs runs with --loopback (all ranks on one GPU) where this cpsim has it, and is
# skipped, saying so, where it does not. Each run is bounded; logs and JSON go to $OUT (one tarball, runs.log).
# Usage (device, from the repository with gpu-pack/ or gpu-pack.tar.xz): OUT=dir scripts/gpu/run_sparse_checks.sh [regex]
# Exit: 0 when every run that ran passed its check, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
. scripts/gpu/pack_env.sh
W=$(work_dir)
{ gpu_header; nvidia-smi topo -m; } >"$W/runs.log" 2>&1
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
loopback=""
"$PACK/bin/cpsim" run --help 2>&1 | grep -q -- "--loopback" && loopback="--loopback"
failed=0
# the backend's own sparse kernels against CPU arithmetic first (the predictor is not covered by --check)
if [ -x "$PACK/bin/cpsim_backend_gpu_tests" ]; then
  timeout -k 5 120 "$PACK/bin/cpsim_backend_gpu_tests" >"$W/backend_gpu_tests.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || failed=1
  printf '%-32s rc=%-3s %s\n' backend_gpu_tests "$rc" "$(tail -n 1 "$W/backend_gpu_tests.log")" | tee -a "$W/runs.log"
fi
while read -r ranks file; do
  [[ -z "$ranks" || "$ranks" == \#* ]] && continue
  tag=$(basename "$file" .json)
  [[ $tag =~ ${1:-.} ]] || continue
  extra=""
  if [ "$ranks" -gt "$gpus" ]; then
    if [ -z "$loopback" ]; then
      printf '%-32s skipped: %s ranks, %s GPU(s), and this cpsim has no --loopback\n' "$tag" "$ranks" "$gpus" | tee -a "$W/runs.log"
      continue
    fi
    extra=$loopback
  fi
  t0=$(date +%s.%N)
  timeout -k 5 "${CPSIM_RUN_LIMIT_S:-300}" "$PACK/bin/cpsim" run "$file" --check --reps 2 --warmup 1 --profile-reps 0 \
    --timeout 120 $extra --json "$W/$tag.json" >"$W/$tag.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || failed=1
  printf '%-32s rc=%-3s %6.1fs  cpsim run %s --check %s\n' "$tag" "$rc" \
    "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$file" "$extra" | tee -a "$W/runs.log"
  grep -E "check \(|  (yes|NO)" "$W/$tag.log" | head -n 24 | sed "s/^/    /"
  [ $rc -eq 0 ] || tail -n 3 "$W/$tag.log" | sed 's/^/    /'
done <scenarios/sparse_checks/list.txt
tar -C "$W" -czf "$OUT/sparse_checks.tgz" . && cp "$W/runs.log" "$OUT/runs_sparse_checks.log"
exit $failed
