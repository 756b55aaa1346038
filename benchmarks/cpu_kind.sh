#!/usr/bin/env bash
# Re-measure, on the running host, every number of issue 23 that depends on the CPU kind, so that a
# session on a kind not yet measured (e.g. AVX-512) fills benchmarks/README.md and docs/demo.md
# with one command. Run it on an otherwise idle machine, from the project root:
#
#     bash benchmarks/cpu_kind.sh [PART ...]      # PART: info step peers demo test (default: all)
#
#   info   the CPU (model, flags), torch, the commit, the load: info.json (always written)
#   step   benchmarks/demo_step.py at one thread: demo_step_t1.json (about 1 min)
#   peers  ../shared/peers/bench_side.py, MBT-B step at 1 and 2 threads, forward at 2, Zorro-B step
#          at 2, with a fresh AVFUSION_HOME so the linear products' trials run here: peers_*.json
#          (about 10 min; needs the peers' venv, PEERS_PY, default ../peers-venv/bin/python,
#          set up as ../shared/peers/README.md says; skipped with one line without it)
#   demo   `make demo` in a fresh clone of HEAD with an empty AVFUSION_HOME, installation
#          included, as a newcomer runs it: demo_time.txt, demo_results.json (about 8 min)
#   test   `make test` in a fresh clone of HEAD: test_time.txt (about 6 min)
#
# Results go to benchmarks/results/cpu_kind/<kind>-<date>/, kind = avx512 or avx2 or other from
# the CPU flags (info.json keeps the full list).
set -euo pipefail

root=$(git rev-parse --show-toplevel)
cd "$root"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(info step peers demo test)
for p in "${parts[@]}"; do
  case $p in info|step|peers|demo|test) ;; *) echo "cpu_kind.sh: unknown part '$p' (info step peers demo test)" >&2; exit 2 ;; esac
done
py=${PYTHON:-.venv/bin/python}
peers_py=${PEERS_PY:-../peers-venv/bin/python}
[ -x "$py" ] || { echo "cpu_kind.sh: $py not found: run 'make test' (or set PYTHON) first" >&2; exit 2; }

flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
case " $flags " in
  *" avx512f "*) kind=avx512 ;;
  *" avx2 "*) kind=avx2 ;;
  *) kind=other ;;
esac
out=benchmarks/results/cpu_kind/$kind-$(date -u +%Y-%m-%d)
mkdir -p "$out"
say() { echo "[cpu_kind] $*"; }
want() { local p; for p in "${parts[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }
# Seconds of wall time of a command, its output kept in a log.
timed() { local log=$1 t0=$SECONDS; shift; "$@" >"$log" 2>&1 || return $?; echo $((SECONDS - t0)); }

PYTHONPATH=src "$py" - "$out/info.json" <<'EOF'
import json, os, platform, subprocess, sys
from datetime import datetime, timezone
import torch
from avfusion.utils.cpu import cpu_info, simd_flags
model, flags = cpu_info()
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
        "cpu_model": model, "cores": os.cpu_count(), "torch": torch.__version__,
        "isa_flags": simd_flags(),
        "flags": sorted(flags), "load_1_5_15": os.getloadavg(), "python": platform.python_version()}
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(f"[cpu_kind] {model}, {info['cores']} cores, {' '.join(info['isa_flags'])}; torch {torch.__version__}; "
      f"load {info['load_1_5_15'][0]:.1f}")
EOF
say "results in $out"

if want step; then
  say "step: the demo's five model steps, one thread"
  PYTHONPATH=src taskset -c 0 "$py" benchmarks/demo_step.py --out "$out/demo_step_t1.json"
fi

if want peers; then
  if [ -x "$peers_py" ] && [ -f ../shared/peers/bench_side.py ]; then
    home=$(mktemp -d)
    side() {  # CPUS NAME bench_side args...
      local cpus=$1 name=$2; shift 2
      say "peers: $name"
      AVFUSION_HOME=$home PYTHONPATH=src taskset -c "$cpus" "$peers_py" ../shared/peers/bench_side.py \
        --no-check "$@" --out "$out/peers_$name.json"
    }
    side 0 t1_train --threads 1 --workloads mbt_train --reps 3 --warmup 1
    side 0,1 t2_train --threads 2 --workloads mbt_train --reps 3 --warmup 2
    side 0,1 t2_fwd --threads 2 --workloads mbt_fwd --reps 3 --warmup 1
    side 0,1 t2_zorro --threads 2 --workloads zorro_train --reps 3 --warmup 1
    mkdir -p "$out/gemm_choices" && cp "$home"/gemm/*.json "$out/gemm_choices/" 2>/dev/null || true  # not the locks
    rm -rf "$home"
  else
    say "peers: skipped, no $peers_py or ../shared/peers (../shared/peers/README.md sets them up)"
  fi
fi

# A fresh clone of HEAD and an empty AVFUSION_HOME: what a newcomer's `make demo` / `make test` meet.
fresh() {  # PART TARGET
  local part=$1 target=$2 tmp secs
  tmp=$(mktemp -d)
  git clone -q "$root" "$tmp/avfusion"
  say "$part: 'make $target' in a fresh clone of $(git rev-parse --short HEAD) ($tmp)"
  secs=$(cd "$tmp/avfusion" && AVFUSION_HOME=$tmp/home timed "$root/$out/${part}_log.txt" make "$target") || {
    say "$part: 'make $target' failed: see $out/${part}_log.txt"; rm -rf "$tmp"; return 1; }
  printf 'make %s, fresh clone of %s, installation included: %s s wall\n' \
    "$target" "$(git rev-parse --short HEAD)" "$secs" | tee "$out/${part}_time.txt"
  [ "$part" = demo ] && cp "$tmp/avfusion/runs/demo/results.json" "$out/demo_results.json"
  rm -rf "$tmp"
}
want demo && fresh demo demo
want test && fresh test test
say "done: $out"
