#!/usr/bin/env bash
# chunkmill compute benchmark (issue 11, item 6): two workloads of
# pangeo-data/distributed-array-examples, chunkmill against cubed (threads and processes
# executors, the same memory budget) and xarray + dask (threaded), side by side in one run.
#
#   bench/compute/run.sh              # both workloads (venv and data made on first use)
#   bench/compute/run.sh --quick      # the same pipeline on a 60 MB input, in about a minute
#   bench/compute/run.sh --medium     # a quarter of the full input (365 days, 0.76 GB): minutes
#   BENCH_WORKLOADS=quadratic bench/compute/run.sh
#
# Input (bench/compute/make_data.py): a Zarr v2 group bench/data/compute/uv.zarr, u and v
# float32 (time=1460 daily steps, lat=360, lon=720), chunks (20, 360, 720) = 20.7 MB, zstd 1;
# 1.51 GB per variable decoded, 3.0 GB in all; CF time "days since 2000-01-01".
# Workloads:
#   quadratic  uu = mean(u*u, time), vv = mean(v*v, time), uv = mean(u*v, time)
#   anomalies  clim = u.groupby("time.month").mean(), anom = u.groupby("time.month") - clim
# Each tool runs as its own process under /usr/bin/time -v (wall, CPU, largest process's peak
# RSS) with bench/virtualize/treesample.py summing RSS and CPU over its process tree (cubed's
# processes executor forks workers); outputs are then checked against numpy in float64
# (bench/compute/verify.py, not timed). Results: bench/out/compute-results.md and .json (raw
# files in bench/out/compute-raw/).
#
#   chunkmill  chunkmill compute --input ds=uv.zarr 'uu = (u * u).mean("time")' ... --output
#              OUT --max-mem BUDGET --no-progress (Zarr v3 output, its default workers)
#   cubed      bench/compute/peers.py cubed-threads|cubed-processes: Spec(allowed_mem=BUDGET,
#              max_workers=WORKERS)
#   dask       bench/compute/peers.py dask: xarray on dask, threaded scheduler, WORKERS threads
#
# Environment:
#   CHUNKMILL=path          chunkmill binary (default target/release/chunkmill; its rows are
#                           skipped, with a message, if it does not exist)
#   BENCH_TOOLS="..."       subset/order of: chunkmill cubed-threads cubed-processes dask
#   BENCH_WORKLOADS="..."   subset of: quadratic anomalies
#   BENCH_MAX_MEM=1GB       the budget of chunkmill (--max-mem) and cubed (allowed_mem)
#   BENCH_WORKERS=2         cubed's max_workers, dask's threads
#   BENCH_TIMEOUT=1200      cap per tool, seconds
#   BENCH_QUIET_WAIT=0      before each tool, wait up to this many seconds for a quiet machine
#   BENCH_KEEP_OUTPUTS=1    keep the outputs under bench/data/compute-out
#   BENCH_PYTHON=python3.12 interpreter used to create the venv
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

QUICK=0
MEDIUM=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --medium) MEDIUM=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

if ((QUICK)); then
  SHAPE=400,90,180; CHUNKS=20,90,180; DATA=bench/data/compute-quick; OUT=bench/out/quick
  MAXMEM=${BENCH_MAX_MEM:-200MB}
elif ((MEDIUM)); then
  SHAPE=365,360,720; CHUNKS=20,360,720; DATA=bench/data/compute-medium; OUT=bench/out/medium
  MAXMEM=${BENCH_MAX_MEM:-1GB}
else
  SHAPE=1460,360,720; CHUNKS=20,360,720; DATA=bench/data/compute; OUT=bench/out
  MAXMEM=${BENCH_MAX_MEM:-1GB}
fi
SRC=$DATA/uv.zarr
OUTDIR=$DATA-out
RAW=$OUT/compute-raw
TIMEOUT=${BENCH_TIMEOUT:-1200}
WORKERS=${BENCH_WORKERS:-2}
CHUNKMILL=${CHUNKMILL:-target/release/chunkmill}
TOOLS=${BENCH_TOOLS:-"chunkmill cubed-threads cubed-processes dask"}
WORKLOADS=${BENCH_WORKLOADS:-"quadratic anomalies"}
VENV=.venv/bench
NICE=(nice -n "${BENCH_NICE:-0}")

. bench/lib.sh  # say, ensure_venv, json_str, cpu_busy_s, wait_quiet

if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -v true >/dev/null 2>&1; then
  say "GNU time (/usr/bin/time with -v) is missing: install it with 'apt-get install -y time' and re-run."
  exit 1
fi
PY=${BENCH_PYTHON:-python3.12}
if [[ -z ${PYENV_VERSION:-} ]] && command -v pyenv >/dev/null 2>&1 && pyenv versions --bare 2>/dev/null | grep -qx 3.12.1; then
  export PYENV_VERSION=3.12.1
fi
ensure_venv "$VENV" bench/requirements.txt
BPY=$ROOT/$VENV/bin/python

mkdir -p "$DATA" "$RAW" "$OUTDIR"
"$BPY" bench/compute/make_data.py "$SRC" --shape "$SHAPE" --chunks "$CHUNKS"
rm -f "$RAW"/*.time "$RAW"/*.log "$RAW"/*.meta.json "$RAW"/*.tree.json "$RAW"/*.stdout "$RAW"/verify-*.json "$RAW"/*.plan.txt
rm -rf "${OUTDIR:?}"/*
say "warming the page cache with the input ($(du -sh "$SRC" | cut -f1)) ..."
find "$SRC" -type f -exec cat {} + >/dev/null
"$BPY" -c 'import cubed, dask, xarray, zarr, numcodecs'

CM_OK=0
if [[ " $TOOLS " == *" chunkmill "* ]]; then
  if [[ -x $CHUNKMILL ]]; then CM_OK=1; else say "chunkmill: no binary at $CHUNKMILL; its rows are skipped (set CHUNKMILL=...)"; fi
fi

# The workloads in chunkmill's expression language (docs/compute.md).
cm_statements() {
  case "$1" in
    quadratic) printf '%s\n' 'uu = (u * u).mean("time")' 'vv = (v * v).mean("time")' 'uv = (u * v).mean("time")' ;;
    anomalies) printf '%s\n' 'clim = u.groupby("time.month").mean()' 'anom = u.groupby("time.month") - clim' ;;
  esac
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
"$BPY" - "$RAW/env.json" <<EOF
import json, sys, platform, subprocess, importlib.metadata as m
json.dump({
  "date": subprocess.check_output(["date", "-u", "+%Y-%m-%d %H:%M UTC"], text=True).strip(),
  "cpu": "$cpu", "nproc": $(nproc), "kernel": platform.release(), "python": platform.python_version(),
  "uptime_start": subprocess.check_output(["uptime"], text=True).strip(),
  "shape": "$SHAPE", "chunks": "$CHUNKS", "max_mem": "$MAXMEM", "workers": $WORKERS, "quick": bool($QUICK),
  "versions": {k: m.version(k) for k in ["cubed", "dask", "xarray", "zarr", "numcodecs", "numpy"]},
  "chunkmill": "$CHUNKMILL",
  "chunkmill_version": "$( ((CM_OK)) && "$CHUNKMILL" --version 2>/dev/null || echo -)",
}, open(sys.argv[1], "w"), indent=1)
EOF

measure() {  # name tool workload cmd...
  local name=$1 tool=$2 workload=$3; shift 3
  local load rc status busy0 busy1
  sync
  wait_quiet
  load=$(cut -d' ' -f1 /proc/loadavg)
  say "== $name (cap ${TIMEOUT}s; load $load)"
  say "   $*"
  busy0=$(cpu_busy_s)
  "${NICE[@]}" /usr/bin/time -v -o "$RAW/$name.time" timeout --kill-after=10 "$TIMEOUT" "$@" >"$RAW/$name.stdout" 2>"$RAW/$name.log" &
  local tpid=$!
  "$BPY" bench/virtualize/treesample.py "$tpid" --out "$RAW/$name.tree.json" --interval 0.2 &
  local spid=$!
  set +e; wait "$tpid"; rc=$?; set -e
  busy1=$(cpu_busy_s)
  wait "$spid" || true
  if [[ $rc == 0 ]]; then status=ok; elif [[ $rc == 124 || $rc == 137 ]]; then status=timeout; else status=failed; fi
  cat >"$RAW/$name.meta.json" <<EOF
{"name": "$name", "tool": "$tool", "workload": "$workload", "status": "$status", "rc": $rc,
 "timeout_s": $TIMEOUT, "max_mem": "$MAXMEM", "load_before": "$load",
 "load_after": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "machine_busy_cpu_s": $(awk -v a="$busy0" -v b="$busy1" 'BEGIN {printf "%.2f", b - a}'),
 "command": $(json_str "$*")}
EOF
  say "   $name: $status, wall $(grep 'Elapsed (wall' "$RAW/$name.time" | awk '{print $NF}'), peak RSS $(awk '/Maximum resident/ {printf "%.0f", $NF*1024/1e6}' "$RAW/$name.time") MB"
  if [[ $status == failed ]]; then tail -6 "$RAW/$name.log" | sed 's/^/     | /' >&2; fi
}

verify_rc=0
for workload in $WORKLOADS; do
  VERIFY_ARGS=()
  for tool in $TOOLS; do
    name=$tool-$workload
    out=$OUTDIR/$name.zarr
    case "$tool" in
      chunkmill)
        ((CM_OK)) || continue
        mapfile -t statements < <(cm_statements "$workload")
        cmd=("$CHUNKMILL" compute --input "ds=$SRC" "${statements[@]}" --output "$out" --max-mem "$MAXMEM" --no-progress)
        "$CHUNKMILL" plan compute --input "ds=$SRC" "${statements[@]}" --output "$out" --max-mem "$MAXMEM" \
          >"$RAW/$name.plan.txt" 2>&1 || true
        measure "$name" chunkmill "$workload" "${cmd[@]}" ;;
      cubed-threads|cubed-processes|dask)
        rm -rf "$OUTDIR/$name.work"
        measure "$name" "$tool" "$workload" "$BPY" bench/compute/peers.py "$tool" "$workload" --src "$SRC" \
          --out "$out" --work "$OUTDIR/$name.work" --max-mem "$MAXMEM" --workers "$WORKERS"
        du -sb "$OUTDIR/$name.work" 2>/dev/null | cut -f1 >"$RAW/$name.work-bytes" || true
        rm -rf "$OUTDIR/$name.work" ;;
      *) say "unknown tool '$tool' in BENCH_TOOLS"; exit 2 ;;
    esac
    if grep -q '"status": "ok"' "$RAW/$name.meta.json"; then VERIFY_ARGS+=("$name=$out"); fi
  done
  if ((${#VERIFY_ARGS[@]})); then
    say "== checking the $workload outputs against numpy (float64; not measured)"
    "$BPY" bench/compute/verify.py "$workload" --src "$SRC" --json "$RAW/verify-$workload.json" "${VERIFY_ARGS[@]}" || verify_rc=1
  fi
done
du -sb "$OUTDIR"/*.zarr 2>/dev/null >"$RAW/output-sizes.txt" || true
if [[ ${BENCH_KEEP_OUTPUTS:-0} != 1 ]]; then rm -rf "${OUTDIR:?}"/*; fi
"$BPY" -c 'import json,sys,subprocess; p=sys.argv[1]; d=json.load(open(p)); d["uptime_end"]=subprocess.check_output(["uptime"],text=True).strip(); json.dump(d,open(p,"w"),indent=1)' "$RAW/env.json"
"$BPY" bench/compute/report.py "$RAW" --md "$OUT/compute-results.md" --json "$OUT/compute-results.json"
say "results: $OUT/compute-results.md and .json (raw: $RAW)"
if ((verify_rc)); then say "some outputs do NOT match numpy (see above)"; exit 1; fi
