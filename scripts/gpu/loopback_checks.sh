#!/usr/bin/env bash
# `cpsim run --check --loopback` of every scheme the backend executes, on ONE GPU: every rank of a 2- or 4-rank
# plan time-shares the machine's only GPU (cpsim's loopback transport in place of NCCL), so the numerics of the
# multi-rank schedules are checked against single-GPU attention where no multi-GPU machine is lent. Times of such
# runs are not the plans' and are not reported.
#   here:   scripts/gpu/pack.sh                 (cpsim and cpsim_loopback_gpu_tests into gpu-pack/ and gpu-pack.tar.xz)
#   device: OUT=... scripts/gpu/loopback_checks.sh [tests] [checks]      (default: both; carry gpu-pack.tar.xz)
# tests:  cpsim_loopback_gpu_tests (2- and 4-rank --check --loopback, spin-kernel signalling, no-fit and hang errors)
# checks: the SCHEMES table below, each row's ranks x cases, 16k tokens; a plan the backend refuses before any rank
#         starts (`cpsim run` exits 2 while `cpsim plan` accepts the scenario) is a "refused" row, not a failure, so
#         rows for schemes the backend does not run yet stay in the table and turn into checks once it does.
# $OUT receives loopback.md (the table, with provenance), loopback_tests.log, loopback_runs.tgz (scenarios, logs, JSON).
# Limits (seconds): CPSIM_RUN_LIMIT_S per run (90), CPSIM_LOOPBACK_BUDGET_S for the checks stage (320: no run starts
# after it, the rest are "not run" rows), CPSIM_LOOPBACK_TESTS_S for the tests (180): both stages end within 600 s.
# Narrowing: CPSIM_LOOPBACK_RANKS (e.g. "2", to split the matrix over two calls; default every row),
# CPSIM_LOOPBACK_FILTER (a regex on the run's tag), CPSIM_LOOPBACK_TOKENS (16384).
# Exit: 0 when nothing failed (refused and not-run rows are listed, not failures), 1 otherwise, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT"
. scripts/gpu/pack_env.sh
[ -x "$PACK/bin/cpsim" ] || { echo "no $PACK/bin/cpsim: run scripts/gpu/pack.sh first (and carry gpu-pack.tar.xz)" >&2; exit 2; }
TOKENS=${CPSIM_LOOPBACK_TOKENS:-16384}
RANKS=" ${CPSIM_LOOPBACK_RANKS:-} "
W=$(work_dir)
mkdir -p "$W/sc" "$W/runs"

# The matrix. One line per scheme, rank count and options: scheme | ranks | cases (mask:pass, space-separated) |
# JSON merged into the scenario (parallel options, workload changes). Masks: causal, full, sparse (block-sparse 128,
# density 0.3, causal), sparse16 (block-sparse 16, density 0.05), video (per-head block-sparse densities). A forward
# case only where the scheme's forward plan differs from the forward half of its fwd_bwd plan's checks at 2 ranks.
C2="causal:fwd causal:fwd_bwd full:fwd_bwd sparse:fwd_bwd"
C4="causal:fwd_bwd full:fwd_bwd sparse:fwd_bwd"
SCHEMES=$(cat <<EOF
ring         | 2 | $C2 |
ring         | 4 | $C4 |
zigzag       | 2 | $C2 |
zigzag       | 4 | $C4 |
stripe       | 2 | causal:fwd causal:fwd_bwd |
stripe       | 4 | causal:fwd_bwd |
ulysses      | 2 | $C2 |
ulysses      | 4 | $C4 |
te_a2a       | 2 | causal:fwd causal:fwd_bwd full:fwd_bwd |
te_a2a       | 4 | causal:fwd_bwd full:fwd_bwd |
te_allgather | 2 | causal:fwd causal:fwd_bwd full:fwd_bwd |
te_allgather | 4 | causal:fwd_bwd full:fwd_bwd |
usp          | 2 | causal:fwd causal:fwd_bwd full:fwd_bwd | {"parallel": {"ulysses_degree": 2}}
usp          | 2 | causal:fwd_bwd full:fwd_bwd | {"parallel": {"ring_degree": 2}}
usp          | 4 | $C4 | {"parallel": {"ulysses_degree": 2, "ring_degree": 2}}
loongtrain   | 2 | causal:fwd causal:fwd_bwd | {"parallel": {"head_degree": 2}}
loongtrain   | 2 | causal:fwd_bwd | {"parallel": {"context_degree": 2}}
loongtrain   | 4 | causal:fwd_bwd | {"parallel": {"head_degree": 2, "context_degree": 2}}
te_p2p       | 2 | causal:fwd causal:fwd_bwd full:fwd_bwd |
te_p2p       | 4 | causal:fwd_bwd |
cqs          | 3 | causal:fwd full:fwd |
dcp          | 2 | causal:fwd causal:fwd_bwd |
dcp          | 4 | causal:fwd_bwd |
pit          | 2 | sparse16:fwd sparse16:fwd_bwd | {"parallel": {"granularity": 16}}
dsv          | 2 | video:fwd_bwd | {"parallel": {"hcp": 2, "scp": 1}, "workload": {"heads": 16, "kv_heads": 16}}
dsv          | 4 | video:fwd_bwd | {"parallel": {"hcp": 2, "scp": 2}, "workload": {"heads": 16, "kv_heads": 16}}
EOF
)

scenario() { # tag scheme ranks mask pass extra-json -> scenario JSON on stdout
  python3 - "$@" "$TOKENS" <<'PY'
import json, sys
tag, scheme, cp, mask, p, extra, tokens = sys.argv[1:8]
sc = {"name": tag, "hardware": "h100-sxm-8", "pass": p, "parallel": {"scheme": scheme, "cp": int(cp)},
      "workload": {"seq_lens": [int(tokens)], "heads": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16"}}
def merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            merge(a[k], v)
        else:
            a[k] = v
merge(sc, json.loads(extra) if extra.strip() else {})
heads = sc["workload"]["heads"]
sc["workload"]["mask"] = {
    "causal": {"kind": "causal"}, "full": {"kind": "full"},
    "sparse": {"kind": "block_sparse", "block": 128, "density": 0.3, "seed": 1, "causal": True},
    "sparse16": {"kind": "block_sparse", "block": 16, "density": 0.05, "seed": 3},
    "video": {"kind": "block_sparse", "block": 128, "seed": 11,
              "head_densities": [[0.4, 0.05, 0.3, 0.1][h % 4] for h in range(heads)]}}[mask]
print(json.dumps(sc))
PY
}

worst_rel_l2() { # measured JSON -> the largest relative L2 error of any rank's checked tensor, or "-"
  python3 - "$1" <<'PY' 2>/dev/null || echo "-"
import json, sys
j = json.load(open(sys.argv[1]))
v = [t["rel_l2"] for c in j.get("check", []) for t in c.values() if isinstance(t, dict) and "rel_l2" in t]
print(f"{max(v):.2e}" if v else "-")
PY
}

checks() {
  local budget=${CPSIM_LOOPBACK_BUDGET_S:-320} t_stage; t_stage=$(date +%s)
  local rows="$W/rows.md" bad=0
  : >"$rows"
  while IFS='|' read -r scheme ranks cases extra; do
    scheme=$(echo "$scheme" | xargs); ranks=$(echo "$ranks" | xargs)
    [ -n "$scheme" ] || continue
    [ -z "${CPSIM_LOOPBACK_RANKS:-}" ] || [[ $RANKS == *" $ranks "* ]] || continue
    local opts; opts=$(echo "$extra" | tr -dc 'a-z0-9_:,' | sed 's/parallel//; s/workload.*//; s/_degree/d/g; s/[:,]/-/g; s/--*/-/g; s/^-//; s/-$//')
    for c in $cases; do
      local mask=${c%%:*} p=${c#*:}
      local tag="lb$ranks-$scheme${opts:+-$opts}-$mask-$p"
      [[ $tag =~ ${CPSIM_LOOPBACK_FILTER:-.} ]] || continue
      if [ $(($(date +%s) - t_stage)) -ge "$budget" ]; then
        echo "| $tag | $scheme | $ranks | $mask | $p | not run (stage budget ${budget}s spent) | | | |" >>"$rows"
        continue
      fi
      if ! scenario "$tag" "$scheme" "$ranks" "$mask" "$p" "$extra" >"$W/sc/$tag.json" 2>"$W/runs/$tag.log"; then
        echo "| $tag | $scheme | $ranks | $mask | $p | error (scenario) | | | $(tail -n 1 "$W/runs/$tag.log") |" >>"$rows"
        bad=1; continue
      fi
      local t0; t0=$(date +%s.%N)
      timeout -k 5 "${CPSIM_RUN_LIMIT_S:-90}" "$PACK/bin/cpsim" run "$W/sc/$tag.json" --check --loopback --reps 2 --warmup 1 \
        --profile-reps 0 --timeout 60 --json "$W/runs/$tag.json" >>"$W/runs/$tag.log" 2>&1
      local rc=$? s; s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
      local result note="" err=-
      case $rc in
        0) result=pass; err=$(worst_rel_l2 "$W/runs/$tag.json") ;;
        1) result=FAIL; bad=1; err=$(worst_rel_l2 "$W/runs/$tag.json"); note=$(grep -E " NO" "$W/runs/$tag.log" | head -n 3 | xargs) ;;
        2) # refused: no rank was started (no "run failed") and the scenario itself plans
           if ! grep -q "run failed" "$W/runs/$tag.log" && "$PACK/bin/cpsim" plan "$W/sc/$tag.json" -o /dev/null >/dev/null 2>&1; then
             result=refused
           else
             result="error (rc=2)"; bad=1
           fi
           note=$(grep -m 1 "error" "$W/runs/$tag.log" | cut -c1-220) ;;
        124 | 137) result="timeout (${CPSIM_RUN_LIMIT_S:-90}s)"; bad=1 ;;
        *) result="error (rc=$rc)"; bad=1; note=$(grep -m 1 -E "error|rank [0-9]+ \(GPU" "$W/runs/$tag.log" | cut -c1-220) ;;
      esac
      note=${note//|/\/}
      echo "| $tag | $scheme | $ranks | $mask | $p | $result | $s | $err | $note |" >>"$rows"
      printf '%-48s %-10s %6ss  %s\n' "$tag" "$result" "$s" "$err"
    done
  done <<<"$SCHEMES"
  {
    echo "# cpsim run --check --loopback on one GPU"
    echo
    echo '```'
    gpu_header
    echo "command: $0 checks; $TOKENS tokens, 32 query / 8 KV heads of 128 (DSV 16/16), bf16; --reps 2 --warmup 1"
    echo '```'
    echo
    echo "Every rank of a plan time-shares the one GPU (loopback transport): the check is of the numerics only, against"
    echo "single-GPU attention (relative L2 of o, lse, dq, dk, dv <= 1e-2 on every rank); seconds are wall time of the run."
    echo
    echo "| run | scheme | ranks | mask | pass | result | s | worst rel_l2 | note |"
    echo "|---|---|---|---|---|---|---|---|---|"
    cat "$rows"
    echo
    for r in pass FAIL refused error timeout "not run"; do printf '%s: %s  ' "$r" "$(grep -c "| $r" "$rows")"; done; echo
  } >"$OUT/loopback.md"
  tail -n 1 "$OUT/loopback.md"
  return $bad
}

tests() {
  local bin="$PACK/bin/cpsim_loopback_gpu_tests"
  [ -x "$bin" ] || { echo "no $bin: pack.sh packs it (CPSIM_PACK_TARGETS must include it)" | tee "$OUT/loopback_tests.log"; return 1; }
  { gpu_header; CPSIM_BIN="$PWD/$PACK/bin/cpsim" timeout -k 5 "${CPSIM_LOOPBACK_TESTS_S:-180}" "$bin"; echo "loopback GPU tests rc=$?"; } \
    >"$OUT/loopback_tests.log" 2>&1
  grep -E "rc=|passed|failed|skipped" "$OUT/loopback_tests.log" | tail -n 3
  grep -q "rc=0$" "$OUT/loopback_tests.log"
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(tests checks)
rc=0
for s in "${stages[@]}"; do
  case $s in
    tests) echo "== loopback GPU tests"; tests || rc=1 ;;
    checks) echo "== --check --loopback matrix (ranks: ${CPSIM_LOOPBACK_RANKS:-all rows})"; checks || rc=1 ;;
    *) echo "usage: $0 [tests] [checks]" >&2; exit 2 ;;
  esac
done
tar -C "$W" -czf "$OUT/loopback_runs.tgz" sc runs 2>/dev/null
exit $rc
