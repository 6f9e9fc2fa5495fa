#!/usr/bin/env bash
# chunkmill convert benchmark (issue 4): 365 daily NetCDF-4 files -> one analysis-ready Zarr store
# chunked for time series, chunkmill against xarray + dask and rechunker, side by side in one run.
#
#   bench/convert/run.sh                   # everything (venvs and data are made on first use)
#   BENCH_FILES=40 bench/convert/run.sh    # the first 40 days only (quicker trial)
#
# Workload: the inputs of the virtualize benchmark (bench/virtualize/make_data.py, reused as is,
# into bench/data/virtualize; only day_*.nc are used): day_000.nc .. day_364.nc, each time=24,
# lat=180, lon=360; air float32 chunks (1,180,360) zlib 4 + shuffle, uwnd float32 chunks
# (24,90,90) zlib 4 (no shuffle); _FillValue -9999; CF time "hours since 2020-01-01 00:00:00";
# lat/lon coordinates. 6.1 MB per file, 2.2 GB in all; 8760 x 180 x 360 x 2 variables =
# 4.54 GB of float32 once decoded. Target: Zarr, chunks time=-1 (8760), lat=18, lon=36, Zstd
# level 1 for every tool (chunkmill convert's default codec), memory budget 1GB (10^9 bytes).
#
# Each tool runs as its own process under /usr/bin/time -v (whole-process wall, user+sys CPU,
# max RSS of the largest single process) and writes a fresh store; the process-tree sampler of
# the virtualize benchmark (bench/virtualize/treesample.py) sums RSS, PSS and CPU over every
# descendant (dask's LocalCluster runs a nanny and a worker process per worker):
#   chunkmill            chunkmill convert 'bench/data/virtualize/day_*.nc' OUT --concat-dim time
#                        --chunks time=-1,lat=18,lon=36 --max-mem 1GB --no-progress --json
#   xarray-dask          xr.open_mfdataset(files, parallel=True, combine="by_coords")
#                        .chunk(time=-1, lat=18, lon=36).to_zarr(OUT) on a dask.distributed
#                        LocalCluster of 2 worker processes x 1 thread, memory_limit "auto" (what
#                        `Client()` gives on this 2-core machine; about 12 GB per worker);
#                        xarray's default engine, netcdf4 (its workers crash with 365 files)
#   xarray-dask-h5netcdf the same with engine="h5netcdf" (thread-safe: this one completes)
#   xarray-dask-1gb      xarray-dask-h5netcdf on a LocalCluster whose 2 workers have
#                        memory_limit 500MB each (1GB in all, the budget)
#   xarray-dask-threads  xarray-dask-h5netcdf on dask's threaded scheduler (2 threads, no
#                        memory limit; with netcdf4 it segfaults at once, pydata/xarray#7079)
#   floor                bench/convert/codec_floor.py: the codec-bound floor, no converting: every
#                        source chunk read and inflated (libdeflate) once, every target chunk encoded
#                        (zstd 1) and written once, on 1 and on BENCH_WORKERS processes; the bar
#                        lines say how far under the floor a ratio would need the run to be
#   rechunker            rechunker.rechunk(open_mfdataset's dataset (netcdf4), {"time": -1,
#                        "lat": 18, "lon": 36}, max_mem="1GB", OUT, TEMP).execute() on the
#                        xarray-dask LocalCluster (max_mem is rechunker's per-task limit; workers
#                        of 500MB cannot run tasks of 1GB)
# (bench/convert/peers.py tells the details and why.) Every output is then opened with
# xr.open_zarr and compared, all values, with xarray.open_mfdataset of the originals
# (bench/convert/verify.py; not measured). Results: bench/out/convert-results.md and .json (raw
# files, the tools' logs and chunkmill's JSON report and plan in bench/out/convert-raw/).
#
# Environment:
#   CHUNKMILL=path          chunkmill binary (default target/release/chunkmill; skipped, with a
#                           message, if missing)
#   CHUNKMILL_EXTRA_ARGS    extra arguments for chunkmill convert (recorded in the results)
#   BENCH_FILES=365         use the first N daily files (N < 365: chunkmill gets them as an @list)
#   BENCH_TOOLS="..."       subset/order of: floor chunkmill xarray-dask xarray-dask-h5netcdf
#                           xarray-dask-1gb xarray-dask-threads rechunker
#   BENCH_WORKERS=2         dask workers (processes of 1 thread; threads for xarray-dask-threads)
#   BENCH_MAX_MEM=1GB       the budget: chunkmill --max-mem, rechunker max_mem, xarray-dask-1gb's
#                           LocalCluster in all
#   BENCH_FILE_CACHE=512    xarray's file_cache_maxsize in the peers (client and every dask worker);
#                           xarray's default, 128, makes the dask workers crash with 365 netCDF4
#                           files (bench/convert/peers.py tells why); 0 = xarray's default
#   BENCH_SAMPLE_S=0.25     interval of the process-tree sampler, seconds
#   BENCH_TIMEOUT=1200      cap per tool, seconds (a capped tool is reported as "> N s (timed out)")
#   BENCH_QUIET_WAIT=0      before each tool, wait up to this many seconds for a quiet machine
#                           (< 0.5 CPU s used in 10 s by anything else), e.g. 600 on a shared one
#   BENCH_NICE=10           niceness of every measured tool (same for all; 0 to run at normal)
#   BENCH_KEEP_OUTPUTS=1    keep the stores under bench/data/convert-out after verification
#   BENCH_PYTHON=python3.12 interpreter used to create the venvs
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

DATA=bench/data/virtualize
OUTDIR=bench/data/convert-out
OUT=bench/out
RAW=$OUT/convert-raw
NFILES=${BENCH_FILES:-365}
TIMEOUT=${BENCH_TIMEOUT:-1200}
WORKERS=${BENCH_WORKERS:-2}
MAXMEM=${BENCH_MAX_MEM:-1GB}
CHUNKS=time=-1,lat=18,lon=36
FILE_CACHE=${BENCH_FILE_CACHE:-512}
SAMPLE_S=${BENCH_SAMPLE_S:-0.25}   # the tree sampler's interval (each scan of /proc costs CPU on 2 cores)
CHUNKMILL=${CHUNKMILL:-target/release/chunkmill}
TOOLS=${BENCH_TOOLS:-"floor chunkmill xarray-dask xarray-dask-h5netcdf xarray-dask-1gb xarray-dask-threads rechunker"}
VENV=.venv/bench
VENV2=.venv/bench-zarr2
NICE=(nice -n "${BENCH_NICE:-10}")

. bench/lib.sh  # say, ensure_venv, json_str, cpu_busy_s, wait_quiet

if ((NFILES < 1 || NFILES > 365)); then say "BENCH_FILES must be 1..365"; exit 2; fi

# --- prerequisites -------------------------------------------------------------------
if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -v true >/dev/null 2>&1; then
  say "GNU time (/usr/bin/time with -v) is missing: install it with 'apt-get install -y time' and re-run."
  exit 1
fi
command -v timeout >/dev/null || { say "'timeout' (coreutils) is missing"; exit 1; }

PY=${BENCH_PYTHON:-python3.12}
if [[ -z ${PYENV_VERSION:-} ]] && command -v pyenv >/dev/null 2>&1 && pyenv versions --bare 2>/dev/null | grep -qx 3.12.1; then
  export PYENV_VERSION=3.12.1
fi

ensure_venv "$VENV" bench/requirements.txt
ensure_venv "$VENV2" bench/requirements-zarr2.txt
BPY=$ROOT/$VENV/bin/python
BPY2=$ROOT/$VENV2/bin/python

# --- data (the virtualize benchmark's daily files) -------------------------------------
mkdir -p "$DATA" "$RAW" "$OUTDIR"
"$BPY" bench/virtualize/make_data.py "$DATA" --files "$NFILES" --no-big
LIST=$RAW/files.txt
for ((d = 0; d < NFILES; d++)); do printf '%s/day_%03d.nc\n' "$DATA" "$d"; done >"$LIST"
if ((NFILES == 365)); then
  CM_INPUTS=("$DATA/day_*.nc")         # the glob, quoted: chunkmill expands it, as in the issue
  n_glob=$(compgen -G "$DATA/day_*.nc" | wc -l)
  ((n_glob == 365)) || { say "$DATA holds $n_glob day_*.nc files, expected 365"; exit 1; }
else
  CM_INPUTS=("@$LIST")                 # chunkmill reads the file list
fi
rm -f "$RAW"/*.time "$RAW"/*.log "$RAW"/*.meta.json "$RAW"/*.tree.json "$RAW"/*.stdout "$RAW"/verify.json "$RAW"/codec_floor.json \
  "$RAW"/chunkmill-plan.json "$RAW"/output-sizes.txt
rm -rf "${OUTDIR:?}"/*
say "warming the page cache with the inputs ($(du -ch $(cat "$LIST") | tail -1 | cut -f1)) ..."
cat $(cat "$LIST") >/dev/null
# Untimed: load the peers' modules once, so no one pays for reading site-packages from disk
"$BPY" -c 'import xarray, dask.distributed, netCDF4, h5netcdf, zarr, pandas'
"$BPY2" -c 'import xarray, dask.distributed, netCDF4, zarr, rechunker'

# --- chunkmill binary ------------------------------------------------------------------
CM_OK=0
if [[ -x $CHUNKMILL ]]; then CM_OK=1; else
  say "chunkmill: no binary at $CHUNKMILL; its row is skipped (build it with 'cargo build --release -p chunkmill' or set CHUNKMILL=)"
fi
# shellcheck disable=SC2206
CM_CMD=("$CHUNKMILL" convert "${CM_INPUTS[@]}" "$OUTDIR/chunkmill.zarr" --concat-dim time --chunks "$CHUNKS"
        --max-mem "$MAXMEM" --no-progress --json ${CHUNKMILL_EXTRA_ARGS:-})
if ((CM_OK)); then
  # Untimed: the plan chunkmill will run (strategy, stages, projected memory per task)
  # shellcheck disable=SC2086
  "$CHUNKMILL" plan convert "${CM_INPUTS[@]}" "$OUTDIR/chunkmill.zarr" --concat-dim time --chunks "$CHUNKS" \
    --max-mem "$MAXMEM" --json ${CHUNKMILL_EXTRA_ARGS:-} >"$RAW/chunkmill-plan.json" 2>"$RAW/chunkmill-plan.log" \
    || say "chunkmill plan convert failed (see $RAW/chunkmill-plan.log)"
fi

# --- machine -------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem_gb=$(awk '/MemTotal/ {printf "%.1f", $2/1024/1024}' /proc/meminfo)
cm_version=$( ((CM_OK)) && "$CHUNKMILL" --version 2>/dev/null || echo "-")
cm_mtime=$( ((CM_OK)) && date -u -r "$CHUNKMILL" '+%Y-%m-%d %H:%M UTC' || echo "-")
"$BPY" - "$RAW/env.json" <<EOF
import json, sys, platform, subprocess
def ver(py, mods):
    code = "import importlib.metadata as m, json; print(json.dumps({k: m.version(k) for k in %r}))" % (mods,)
    return json.loads(subprocess.check_output([py, "-c", code], text=True))
env = {
  "date": subprocess.check_output(["date", "-u", "+%Y-%m-%d %H:%M UTC"], text=True).strip(),
  "cpu": "$cpu", "nproc": $(nproc), "mem_gb": $mem_gb, "kernel": platform.release(),
  "python": platform.python_version(),
  "free_g": subprocess.check_output(["free", "-g"], text=True),
  "uptime_start": subprocess.check_output(["uptime"], text=True).strip(),
  "files": $NFILES, "workers": $WORKERS, "file_cache_maxsize": $FILE_CACHE, "max_mem": "$MAXMEM", "chunks": "$CHUNKS",
  "versions": {"venv $VENV": ver("$BPY", ["xarray", "dask", "distributed", "zarr", "numcodecs", "netCDF4", "h5netcdf", "h5py", "numpy", "pandas"]),
               "venv $VENV2": ver("$BPY2", ["rechunker", "xarray", "dask", "distributed", "zarr", "numcodecs", "netCDF4", "numpy"])},
  "chunkmill": "$CHUNKMILL", "chunkmill_version": "$cm_version", "chunkmill_built": "$cm_mtime",
  "chunkmill_command": $(json_str "${CM_CMD[*]}"),
  "chunkmill_extra_args": "${CHUNKMILL_EXTRA_ARGS:-}", "timeout_s": $TIMEOUT, "nice": ${BENCH_NICE:-10}, "sample_interval_s": $SAMPLE_S,
}
json.dump(env, open(sys.argv[1], "w"), indent=1)
EOF

# --- measurement ---------------------------------------------------------------------
write_meta() {  # name status rc load_before uptime_before rustc_count cmd note [busy_before busy_after]
  cat >"$RAW/$1.meta.json" <<EOF
{"status": "$2", "rc": $3, "timeout_s": $TIMEOUT, "load_before": "$4", "files": $NFILES,
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
  "${NICE[@]}" /usr/bin/time -v -o "$RAW/$name.time" timeout --kill-after=10 "$TIMEOUT" "$@" >"$RAW/$name.stdout" 2>"$RAW/$name.log" &
  local tpid=$!
  "$BPY" bench/virtualize/treesample.py "$tpid" --out "$RAW/$name.tree.json" --interval "$SAMPLE_S" &
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
  say "   $name: $status, wall $wall, peak RSS (largest process) $rss MB (log: $RAW/$name.log)"
  if [[ $status == failed ]]; then tail -8 "$RAW/$name.log" | sed 's/^/     | /' >&2; fi
}

VERIFY_ARGS=()
for tool in $TOOLS; do
  out=$OUTDIR/$tool.zarr
  rm -rf "$out" "$out.work" "$OUTDIR/$tool-temp.zarr"
  case "$tool" in
    floor)
      measure codec_floor "$BPY" bench/convert/codec_floor.py --list "$LIST" --chunks "$CHUNKS" --workers "$WORKERS" \
        --json "$RAW/codec_floor.json" --write-dir "$OUTDIR/floor-writes"
      continue ;;
    chunkmill)
      if ((!CM_OK)); then
        write_meta chunkmill skipped 0 "" "$(uptime)" 0 "" "no binary at $CHUNKMILL"; continue
      fi
      measure chunkmill "${CM_CMD[@]}" ;;
    xarray-dask)
      measure "$tool" "$BPY" bench/convert/peers.py xarray-dask --scheduler distributed --worker-memory auto --file-cache "$FILE_CACHE" \
        --list "$LIST" --out "$out" --chunks "$CHUNKS" --max-mem "$MAXMEM" --workers "$WORKERS" ;;
    xarray-dask-h5netcdf)
      measure "$tool" "$BPY" bench/convert/peers.py xarray-dask --engine h5netcdf --scheduler distributed --worker-memory auto \
        --file-cache "$FILE_CACHE" --list "$LIST" --out "$out" --chunks "$CHUNKS" --max-mem "$MAXMEM" --workers "$WORKERS" ;;
    xarray-dask-1gb)
      measure "$tool" "$BPY" bench/convert/peers.py xarray-dask --engine h5netcdf --scheduler distributed --worker-memory budget --file-cache "$FILE_CACHE" \
        --list "$LIST" --out "$out" --chunks "$CHUNKS" --max-mem "$MAXMEM" --workers "$WORKERS" ;;
    xarray-dask-threads)
      measure "$tool" "$BPY" bench/convert/peers.py xarray-dask --engine h5netcdf --scheduler threads --file-cache "$FILE_CACHE" --list "$LIST" \
        --out "$out" --chunks "$CHUNKS" --max-mem "$MAXMEM" --workers "$WORKERS" ;;
    rechunker)
      measure "$tool" "$BPY2" bench/convert/peers.py rechunker --scheduler distributed --worker-memory auto --file-cache "$FILE_CACHE" --list "$LIST" \
        --out "$out" --temp "$OUTDIR/$tool-temp.zarr" --chunks "$CHUNKS" --max-mem "$MAXMEM" --workers "$WORKERS" ;;
    *) say "unknown tool '$tool' in BENCH_TOOLS"; exit 2 ;;
  esac
  # what is left besides the store: rechunker's temp store (it never deletes it), chunkmill's work dir
  du -sb "$out" "$out.work" "$OUTDIR/$tool-temp.zarr" 2>/dev/null >>"$RAW/output-sizes.txt" || true
  rm -rf "$OUTDIR/$tool-temp.zarr"
  if grep -q '"status": "ok"' "$RAW/$tool.meta.json"; then VERIFY_ARGS+=("$tool=$out"); fi
done

# --- verification (not measured) -----------------------------------------------------
verify_rc=0
if ((${#VERIFY_ARGS[@]})); then
  say "== checking every output against xarray.open_mfdataset of the originals (not measured)"
  "$BPY" bench/convert/verify.py --list "$LIST" --chunks "$CHUNKS" --json "$RAW/verify.json" "${VERIFY_ARGS[@]}" || verify_rc=$?
fi
if [[ ${BENCH_KEEP_OUTPUTS:-0} != 1 ]]; then rm -rf "${OUTDIR:?}"/*; fi
"$BPY" -c 'import json,sys,subprocess; p=sys.argv[1]; d=json.load(open(p)); d["uptime_end"]=subprocess.check_output(["uptime"],text=True).strip(); json.dump(d,open(p,"w"),indent=1)' "$RAW/env.json"

# --- report --------------------------------------------------------------------------
"$BPY" bench/convert/report.py "$RAW" --md "$OUT/convert-results.md" --json "$OUT/convert-results.json"
say "results: $OUT/convert-results.md and $OUT/convert-results.json (raw: $RAW)"
if [[ $verify_rc != 0 ]]; then say "some outputs do NOT match the original files (see above)"; exit 1; fi
