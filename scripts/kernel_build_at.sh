#!/usr/bin/env bash
# Prints "SHA256,GIT" — the identity of the attention kernels at a commit (cmake/kernel_source_hash.cmake over that
# commit's kernels/), for `cpsim calibrate --kernel-build` when refitting a run recorded before raw files carried it.
# Usage: scripts/kernel_build_at.sh <commit>
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: scripts/kernel_build_at.sh <commit>" >&2; exit 2; }
commit=$(git rev-parse --verify --quiet "$1^{commit}") || { echo "kernel_build_at.sh: '$1' is not a commit" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$commit" kernels | tar -x -C "$tmp"
hash=$(cmake -DKERNELS_DIR="$tmp/kernels" -P cmake/kernel_source_hash.cmake 2>&1 | awk '{print $1}')
git_sha=$(git log -1 --format=%h "$commit" -- kernels/src kernels/include kernels/CMakeLists.txt)
echo "$hash,$git_sha"
