#!/usr/bin/env bash
# Quick start 1: set up, build, and run the default scenario (prints its result table).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
./build/app/cpsim simulate scenarios/default.json
