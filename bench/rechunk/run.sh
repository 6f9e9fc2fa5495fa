#!/usr/bin/env bash
# chunkmill rechunk benchmark: chunkmill against rechunker (dask and python executors),
# dask.array rechunk + to_zarr and cubed (threads), plus a codec-bound floor, in one run.
#
#   bench/rechunk/run.sh            # everything (venvs and data are made on first use)
#   bench/rechunk/run.sh --smoke    # the same pipeline on a 60 MB array, in seconds
#
# Workload: float32 (8760, 180, 360) = 2.27 GB, chunks (24, 180, 360), zstd level 1
# (bench/rechunk/make_data.py) -> chunks (8760, 18, 36), zstd level 1, budget 512MB.
# Each tool runs as its own process under /usr/bin/time -v (wall, peak RSS) and writes a
# fresh output; a sampler also sums RSS over the process tree. Outputs are then checked
# against the source in a separate, unmeasured step. Results:
# bench/out/rechunk-results.md and .json (raw files in bench/out/rechunk-raw/).
#
# Environment:
#   CHUNKMILL=path          chunkmill binary (default target/release/chunkmill; skipped,
#                           with a message, if it does not exist)
#   CHUNKMILL_EXTRA_ARGS    extra arguments for chunkmill (recorded in the results)
#   BENCH_TOOLS="..."       subset/order of: chunkmill rechunker-dask rechunker-python dask cubed
#                           tensorstore zarrs-reencode floor
#   ZARRS_TOOLS_ROOT=dir    where zarrs_tools' zarrs_reencode is installed (cargo install --root),
#                           outside the repository; installed there on first use
#                           (default ~/.cache/chunkmill-bench/zarrs_tools)
#   BENCH_TIMEOUT=600       cap per tool, seconds (a capped tool is reported as "> N s (timed out)")
#   BENCH_WORKERS=2         threads for the peers' schedulers and the parallel codec floor
#   BENCH_QUIET_WAIT=0      before each tool, wait up to this many seconds for the machine to be
#                           quiet (< 0.5 CPU s used in 10 s by anything else); on a shared
#                           machine where someone compiles, e.g. 600
#   BENCH_KEEP_OUTPUTS=1    keep the outputs under bench/data/out after verification
#   BENCH_PYTHON=python3.12 interpreter used to create the venvs
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

if [[ $SMOKE == 1 ]]; then
  SHAPE=240,180,360; SRC_CHUNKS=24,180,360; CHUNKS=240,18,36; MAXMEM=40MB
  DATA=bench/data/smoke; OUT=bench/out/smoke
else
  SHAPE=8760,180,360; SRC_CHUNKS=24,180,360; CHUNKS=8760,18,36; MAXMEM=512MB
  DATA=bench/data; OUT=bench/out
fi
SRC=$DATA/src.zarr
RAW=$OUT/rechunk-raw
TIMEOUT=${BENCH_TIMEOUT:-600}
WORKERS=${BENCH_WORKERS:-2}
CHUNKMILL=${CHUNKMILL:-target/release/chunkmill}
TOOLS=${BENCH_TOOLS:-"floor chunkmill rechunker-dask rechunker-python dask cubed tensorstore zarrs-reencode"}
ZARRS_TOOLS_VERSION=0.8.1
ZARRS_TOOLS_ROOT=${ZARRS_TOOLS_ROOT:-$HOME/.cache/chunkmill-bench/zarrs_tools}
ZARRS_REENCODE=$ZARRS_TOOLS_ROOT/bin/zarrs_reencode
VENV=.venv/bench
VENV2=.venv/bench-zarr2

. bench/lib.sh  # say, ensure_venv, json_str, cpu_busy_s, wait_quiet

# --- prerequisites -------------------------------------------------------------------
if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -v true >/dev/null 2>&1; then
  say "GNU time (/usr/bin/time with -v) is missing: install it with 'apt-get install -y time' (Debian/Ubuntu) and re-run."
  exit 1
fi
command -v timeout >/dev/null || { say "'timeout' (coreutils) is missing"; exit 1; }

PY=${BENCH_PYTHON:-python3.12}
if [[ -z ${PYENV_VERSION:-} ]] && command -v pyenv >/dev/null 2>&1 && pyenv versions --bare 2>/dev/null | grep -qx 3.12.1; then
  export PYENV_VERSION=3.12.1
fi

ensure_venv "$VENV" bench/requirements.txt
if [[ " $TOOLS " == *" zarrs-reencode "* ]] && ! "$ZARRS_REENCODE" --version 2>/dev/null | grep -q "$ZARRS_TOOLS_VERSION"; then
  say "installing zarrs_tools $ZARRS_TOOLS_VERSION (zarrs_reencode) into $ZARRS_TOOLS_ROOT (a few minutes, once) ..."
  nice cargo install zarrs_tools --version "=$ZARRS_TOOLS_VERSION" --locked --root "$ZARRS_TOOLS_ROOT" --bin zarrs_reencode >&2
fi
ensure_venv "$VENV2" bench/requirements-zarr2.txt
BPY=$ROOT/$VENV/bin/python
BPY2=$ROOT/$VENV2/bin/python

# --- source data ---------------------------------------------------------------------
mkdir -p "$DATA" "$RAW"
"$BPY" bench/rechunk/make_data.py "$SRC" --shape "$SHAPE" --chunks "$SRC_CHUNKS"
rm -f "$RAW"/*
# Untimed: pull the source into the page cache so that no tool pays for the first read.
say "warming the page cache with the source ($(du -sh "$SRC" | cut -f1)) ..."
find "$SRC" -type f -exec cat {} + >/dev/null

# --- machine -------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem_gb=$(awk '/MemTotal/ {printf "%.1f", $2/1024/1024}' /proc/meminfo)
"$BPY" - "$RAW/env.json" <<EOF
import json, sys, platform, subprocess
def ver(py, mods):
    code = "import importlib.metadata as m, json; print(json.dumps({k: m.version(k) for k in %r}))" % (mods,)
    return json.loads(subprocess.check_output([py, "-c", code], text=True))
env = {
  "date": subprocess.check_output(["date", "-u", "+%Y-%m-%d %H:%M UTC"], text=True).strip(),
  "cpu": "$cpu", "nproc": $(nproc), "mem_gb": $mem_gb, "kernel": platform.release(),
  "python": platform.python_version(),
  "workload": "float32 ($SHAPE) chunks ($SRC_CHUNKS) zstd:1 -> chunks ($CHUNKS), budget $MAXMEM, $WORKERS worker threads",
  "versions": {"venv $VENV": ver("$BPY", ["zarr", "numcodecs", "dask", "cubed", "numpy", "tensorstore"]),
               "venv $VENV2": ver("$BPY2", ["rechunker", "zarr", "numcodecs", "dask", "numpy"])},
  "chunkmill": "$CHUNKMILL", "chunkmill_extra_args": "${CHUNKMILL_EXTRA_ARGS:-}",
  "timeout_s": $TIMEOUT, "smoke": bool($SMOKE),
}
json.dump(env, open(sys.argv[1], "w"), indent=1)
EOF

# --- measurement ---------------------------------------------------------------------
write_meta() {  # name status rc load_before uptime_before rustc_count cmd note [busy_before busy_after]
  cat >"$RAW/$1.meta.json" <<EOF
{"status": "$2", "rc": $3, "timeout_s": $TIMEOUT, "load_before": "$4",
 "machine_busy_cpu_s": $(awk -v a="${9:-0}" -v b="${10:-0}" 'BEGIN {printf "%.2f", b - a}'),
 "uptime_before": $(json_str "$5"), "rustc_processes_before": $6,
 "load_after": "$(cut -d' ' -f1-3 /proc/loadavg)", "command": $(json_str "$7"), "note": $(json_str "$8")}
EOF
}

measure() {  # name cmd...
  local name=$1; shift
  local load up rustc rc status busy0 busy1
  sync
  wait_quiet
  load=$(cut -d' ' -f1 /proc/loadavg)
  up=$(uptime)
  rustc=$(pgrep -c -x rustc || true)
  say "== $name (cap ${TIMEOUT}s; load $load; rustc processes running: $rustc)"
  say "   $*"
  busy0=$(cpu_busy_s)
  /usr/bin/time -v -o "$RAW/$name.time" timeout --kill-after=10 "$TIMEOUT" "$@" >"$RAW/$name.log" 2>&1 &
  local tpid=$!
  "$BPY" bench/rechunk/treepeak.py "$tpid" --out "$RAW/$name.tree.json" &
  local spid=$!
  set +e; wait "$tpid"; rc=$?; set -e
  busy1=$(cpu_busy_s)
  wait "$spid" || true
  if [[ $rc == 0 ]]; then status=ok
  elif [[ $rc == 124 || $rc == 137 ]]; then status=timeout
  else status=failed; fi
  write_meta "$name" "$status" "$rc" "$load" "$up" "$rustc" "$*" "" "$busy0" "$busy1"
  local wall rss
  wall=$(grep 'Elapsed (wall' "$RAW/$name.time" | awk '{print $NF}')
  rss=$(awk '/Maximum resident/ {printf "%.0f", $NF*1024/1e6}' "$RAW/$name.time")
  say "   $name: $status, wall $wall, peak RSS $rss MB (log: $RAW/$name.log)"
  if [[ $status == failed ]]; then tail -5 "$RAW/$name.log" | sed 's/^/     | /' >&2; fi
}

VERIFY_ARGS=()
for tool in $TOOLS; do
  out=$DATA/out/$tool.zarr
  work=$DATA/work/$tool
  rm -rf "$out" "$work"
  mkdir -p "$DATA/out" "$work"
  case "$tool" in
    floor)
      measure codec_floor "$BPY" bench/rechunk/codec_floor.py "$SRC" --threads "$WORKERS" --json "$RAW/codec_floor.json" \
        --write-dir "$work/writes"
      continue ;;
    chunkmill)
      if [[ ! -x $CHUNKMILL ]]; then
        say "== chunkmill: SKIPPED, no binary at $CHUNKMILL (build it with 'cargo build --release' or set CHUNKMILL=/path/to/chunkmill)"
        write_meta chunkmill skipped 0 "" "$(uptime)" 0 "" "no binary at $CHUNKMILL"
        continue
      fi
      # shellcheck disable=SC2086
      measure chunkmill "$CHUNKMILL" rechunk "$SRC" "$out" --chunks "$CHUNKS" --max-mem "$MAXMEM" \
        --codec zstd:1 --no-progress --overwrite ${CHUNKMILL_EXTRA_ARGS:-} ;;
    rechunker-dask|rechunker-python)
      measure "$tool" "$BPY2" bench/rechunk/peers.py "$tool" "$SRC" "$out" "$work" \
        --chunks "$CHUNKS" --max-mem "$MAXMEM" --workers "$WORKERS" ;;
    dask|cubed|tensorstore)
      measure "$tool" "$BPY" bench/rechunk/peers.py "$tool" "$SRC" "$out" "$work" \
        --chunks "$CHUNKS" --max-mem "$MAXMEM" --workers "$WORKERS" ;;
    zarrs-reencode)
      # zarrs_tools' re-encoder (Rust): Zarr v3 output with the target chunks, zstd:1, WORKERS
      # chunks at once, a chunk cache of the budget; it has no memory budget of its own.
      # zarrs_reencode 0.8.1 keeps the source's chunk shape when given --chunk-shape alone
      # (checked on a small v2 and v3 array), so the target chunks are also its shard shape:
      # one inner chunk per shard, the same bytes plus a 16-byte shard index.
      measure "$tool" "$ZARRS_REENCODE" "$SRC" "$out" --chunk-shape "$CHUNKS" --shard-shape "$CHUNKS" \
        --bytes-to-bytes-codecs '[{"name": "zstd", "configuration": {"level": 1, "checksum": false}}]' \
        --concurrent-chunks "$WORKERS" --cache-size "$(numfmt --from=si "${MAXMEM%B}")" ;;
    *) say "unknown tool '$tool' in BENCH_TOOLS"; exit 2 ;;
  esac
  rm -rf "$work"   # intermediates left behind (rechunker never deletes its temp store)
  if grep -q '"status": "ok"' "$RAW/$tool.meta.json"; then VERIFY_ARGS+=("$tool=$out"); fi
done

# --- verification (not measured) -----------------------------------------------------
verify_rc=0
if ((${#VERIFY_ARGS[@]})); then
  say "== verifying outputs against the source (not measured)"
  "$BPY" bench/rechunk/verify.py "$SRC" --chunks "$CHUNKS" --json "$RAW/verify.json" "${VERIFY_ARGS[@]}" >&2 || verify_rc=$?
fi
if [[ ${BENCH_KEEP_OUTPUTS:-0} != 1 ]]; then rm -rf "$DATA/out" "$DATA/work"; fi

# --- report --------------------------------------------------------------------------
"$BPY" bench/rechunk/report.py "$RAW" --md "$OUT/rechunk-results.md" --json "$OUT/rechunk-results.json"
say "results: $OUT/rechunk-results.md and $OUT/rechunk-results.json (raw: $RAW)"
if [[ $verify_rc != 0 ]]; then say "some outputs do NOT equal the source (see above)"; exit 1; fi
