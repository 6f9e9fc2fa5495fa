#!/usr/bin/env bash
# chunkmill virtualize benchmark (issue 3, item 8): chunkmill against kerchunk and VirtualiZarr
# on 365 daily NetCDF-4 files, side by side in one run, plus the time to list 50 000 chunks.
#
#   bench/virtualize/run.sh            # everything (venv and data are made on first use)
#   BENCH_FILES=40 bench/virtualize/run.sh   # the first 40 days only (quicker trial)
#   bench/virtualize/run.sh --10k      # the 10 000-file collection instead (issue 13, item 3)
#
# --10k: bench/virtualize/make_data_10k.py writes d_00000.nc .. d_09999.nc into
# bench/data/virtualize10k (about 190 KB each, 1.9 GB in all, a few minutes once): daily
# files, time=4 (6-hourly), lat=73, lon=144; air chunks (1,73,144) zlib+shuffle, uwnd chunks
# (4,37,72) zlib; 8 chunks per file, 80 000 references. Same tools and checks; no listing
# benchmark; results in bench/out/virtualize10k-results.md and .json (raw files in
# bench/out/virtualize10k-raw/). Its bar: scanned and combined in < 3 s with peak RSS < 200 MB.
#
# Workload (bench/virtualize/make_data.py, netCDF4-python): day_000.nc .. day_364.nc, each
# time=24, lat=180, lon=360; air float32 chunks (1,180,360) zlib+shuffle, uwnd float32 chunks
# (24,90,90) zlib; CF time "hours since 2020-01-01 00:00:00", calendar standard; lat/lon
# coordinates. 6.1 MB per file, 32 chunks per file. Plus chunks50k.nc: v(3200,4000) float32,
# chunks (16,16) = 50 000 chunks, for the listing benchmark.
#
# Each tool and format runs as its own process under /usr/bin/time -v (whole-process wall,
# max RSS) and writes a fresh reference file (bench/virtualize/peers.py tells what each peer runs):
#   chunkmill    chunkmill virtualize 'bench/data/virtualize/day_*.nc' --concat-dim time
#                --output OUT --format kerchunk-json (and kerchunk-parquet when
#                `chunkmill virtualize --help` lists it)
#   kerchunk     SingleHdf5ToZarr per file in multiprocessing.Pool(BENCH_WORKERS), then
#                MultiZarrToZarr(concat_dims=["time"]) -> JSON, and -> Parquet
#   virtualizarr open_virtual_mfdataset(HDFParser, ProcessPoolExecutor(BENCH_WORKERS)) with
#                concat_dim time -> ds.vz.to_kerchunk(format="json"), and "parquet"
# A sampler (bench/virtualize/treesample.py) also sums PSS, RSS and CPU time over the process
# tree (the peers fork workers; /usr/bin/time's RSS is the largest single process, and its CPU
# time misses a forkserver's workers). Every output is then opened
# with xarray through fsspec's reference filesystem and compared with xarray.open_mfdataset
# of the originals (bench/virtualize/verify.py; not measured). Then the listing benchmark
# (bench/virtualize/listing.py): chunkmill inspect --json, chunkmill virtualize, h5py
# chunk_iter and kerchunk SingleHdf5ToZarr on chunks50k.nc, each a whole process, best of N.
# Results: bench/out/virtualize-results.md and .json (raw files in bench/out/virtualize-raw/).
#
# Environment:
#   CHUNKMILL=path          chunkmill binary (default $HOME/.cache/chunkmill/target/release/chunkmill)
#   BENCH_WAIT_BINARY=0     if the binary is missing, wait up to this many seconds for it to
#                           appear (someone else builds it); then skip chunkmill with a message
#   BENCH_FILES=365         use the first N daily files (N < 365: inputs given as an @list;
#                           --10k: 1..10000, default 10000)
#   BENCH_TOOLS="..."       subset/order of: chunkmill kerchunk virtualizarr listing
#   BENCH_FORMATS="json parquet"
#   BENCH_WORKERS=2         processes of the peers' pools (chunkmill: its default workers)
#   CHUNKMILL_EXTRA_ARGS    extra arguments for chunkmill virtualize (recorded in the results)
#   BENCH_TIMEOUT=1200      cap per tool, seconds
#   BENCH_QUIET_WAIT=0      before each tool, wait up to this many seconds for a quiet machine
#                           (< 0.5 CPU s used in 10 s by anything else); on a shared machine
#                           where someone compiles, e.g. 600
#   BENCH_REPEAT=7          timed repetitions of each listing command (after one warm-up)
#   BENCH_CM_REPEAT=5       chunkmill virtualize runs in well under a second, below what
#                           /usr/bin/time resolves (1/100 s): after its measured run, the same
#                           command is run this many more times (after a warm-up) under
#                           bench/virtualize/runtimes.py (perf_counter + wait4); the table's
#                           wall for chunkmill is their median (0: time -v only)
#   BENCH_KEEP_OUTPUTS=1    keep the reference files under bench/data/virtualize-out
#   BENCH_PYTHON=python3.12 interpreter used to create the venv
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

SET=365
for arg in "$@"; do
  case "$arg" in
    --10k) SET=10k ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

OUT=bench/out
if [[ $SET == 10k ]]; then
  DATA=bench/data/virtualize10k
  OUTDIR=bench/data/virtualize10k-out
  RAW=$OUT/virtualize10k-raw
  RESULTS=$OUT/virtualize10k-results
  NFILES=${BENCH_FILES:-10000}; MAXFILES=10000
  PATTERN=d_%05d.nc; GLOB='d_*.nc'
  DEFAULT_TOOLS="chunkmill kerchunk virtualizarr"
else
  DATA=bench/data/virtualize
  OUTDIR=bench/data/virtualize-out
  RAW=$OUT/virtualize-raw
  RESULTS=$OUT/virtualize-results
  NFILES=${BENCH_FILES:-365}; MAXFILES=365
  PATTERN=day_%03d.nc; GLOB='day_*.nc'
  DEFAULT_TOOLS="chunkmill kerchunk virtualizarr listing"
fi
TIMEOUT=${BENCH_TIMEOUT:-1200}
WORKERS=${BENCH_WORKERS:-2}
REPEAT=${BENCH_REPEAT:-7}
CM_REPEAT=${BENCH_CM_REPEAT:-5}
CHUNKMILL=${CHUNKMILL:-$HOME/.cache/chunkmill/target/release/chunkmill}
TOOLS=${BENCH_TOOLS:-$DEFAULT_TOOLS}
FORMATS=${BENCH_FORMATS:-"json parquet"}
VENV=.venv/bench-virt
NICE=(nice -n 10)

. bench/lib.sh  # say, ensure_venv, json_str, cpu_busy_s, wait_quiet

if ((NFILES < 1 || NFILES > MAXFILES)); then say "BENCH_FILES must be 1..$MAXFILES"; exit 2; fi
if [[ $SET == 10k && " $TOOLS " == *" listing "* ]]; then say "the listing benchmark belongs to the 365-file run (no --10k)"; exit 2; fi

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

ensure_venv "$VENV" bench/virtualize/requirements.txt
BPY=$ROOT/$VENV/bin/python

# --- data ----------------------------------------------------------------------------
mkdir -p "$DATA" "$RAW" "$OUTDIR"
if [[ $SET == 10k ]]; then
  "${NICE[@]}" "$BPY" bench/virtualize/make_data_10k.py "$DATA" --files "$MAXFILES"
else
  "${NICE[@]}" "$BPY" bench/virtualize/make_data.py "$DATA"
fi
LIST=$RAW/files.txt
for ((d = 0; d < NFILES; d++)); do printf "%s/$PATTERN\n" "$DATA" "$d"; done >"$LIST"
if ((NFILES == MAXFILES)); then
  CM_INPUT="$DATA/$GLOB"           # the glob, as in the issue
  n_glob=$(compgen -G "$DATA/$GLOB" | wc -l)
  ((n_glob == MAXFILES)) || { say "$DATA holds $n_glob $GLOB files, expected $MAXFILES"; exit 1; }
else
  CM_INPUT="@$LIST"
fi
rm -f "$RAW"/*.runs.json* "$RAW"/*.time "$RAW"/*.log "$RAW"/*.meta.json "$RAW"/*.tree.json "$RAW"/*.stdout "$RAW"/list-* "$RAW"/listing.json "$RAW"/verify.json
rm -rf "${OUTDIR:?}"/*
WARM=$LIST
if [[ $SET == 365 ]]; then WARM=$RAW/warm.txt; { cat "$LIST"; echo "$DATA/chunks50k.nc"; } >"$WARM"; fi
say "warming the page cache with the inputs ($(xargs -d '\n' du -cb <"$WARM" | tail -1 | awk '{printf "%.2f GB", $1/1e9}')) ..."
xargs -d '\n' cat <"$WARM" >/dev/null
# Untimed: load the peers' modules once, so no one pays for reading site-packages from disk
"$BPY" -c 'import h5py, kerchunk.hdf, kerchunk.combine, kerchunk.df, ujson, virtualizarr, virtualizarr.parsers, obstore, obspec_utils, xarray, pandas, fastparquet, pyarrow, zarr'

# --- chunkmill binary ------------------------------------------------------------------
CM_OK=0
if [[ " $TOOLS " == *" chunkmill "* || " $TOOLS " == *" listing "* ]]; then
  waited=0
  while [[ ! -x $CHUNKMILL ]] && ((waited < ${BENCH_WAIT_BINARY:-0})); do
    ((waited == 0)) && say "waiting up to ${BENCH_WAIT_BINARY}s for $CHUNKMILL to be built (by someone else) ..."
    sleep 15; waited=$((waited + 15))
  done
  if [[ -x $CHUNKMILL ]]; then CM_OK=1; else
    say "chunkmill: no binary at $CHUNKMILL; its rows are skipped (set CHUNKMILL=/path/to/chunkmill)"
  fi
fi
CM_PARQUET=0
if ((CM_OK)) && "$CHUNKMILL" virtualize --help 2>&1 | grep -q 'kerchunk-parquet'; then CM_PARQUET=1; fi

# --- machine -------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem_gb=$(awk '/MemTotal/ {printf "%.1f", $2/1024/1024}' /proc/meminfo)
cm_version=$( ((CM_OK)) && "$CHUNKMILL" --version 2>/dev/null || echo "-")
cm_mtime=$( ((CM_OK)) && date -u -r "$CHUNKMILL" '+%Y-%m-%d %H:%M UTC' || echo "-")
"$BPY" - "$RAW/env.json" <<EOF
import json, sys, platform, subprocess, importlib.metadata as m
env = {
  "date": subprocess.check_output(["date", "-u", "+%Y-%m-%d %H:%M UTC"], text=True).strip(),
  "cpu": "$cpu", "nproc": $(nproc), "mem_gb": $mem_gb, "kernel": platform.release(),
  "python": platform.python_version(),
  "free_g": subprocess.check_output(["free", "-g"], text=True),
  "uptime_start": subprocess.check_output(["uptime"], text=True).strip(),
  "files": $NFILES, "set": "$SET", "workers": $WORKERS, "formats": "$FORMATS",
  "versions": {k: m.version(k) for k in ["kerchunk", "virtualizarr", "h5py", "netCDF4", "xarray", "fsspec",
               "zarr", "numcodecs", "numpy", "pandas", "fastparquet", "pyarrow", "obstore", "obspec-utils", "dask", "ujson"]},
  "hdf5": __import__("h5py").version.hdf5_version,
  "chunkmill": "$CHUNKMILL", "chunkmill_version": "$cm_version", "chunkmill_built": "$cm_mtime",
  "chunkmill_parquet": bool($CM_PARQUET), "chunkmill_input": "$CM_INPUT",
  "chunkmill_extra_args": "${CHUNKMILL_EXTRA_ARGS:-}", "timeout_s": $TIMEOUT,
}
json.dump(env, open(sys.argv[1], "w"), indent=1)
EOF

# --- measurement ---------------------------------------------------------------------
write_meta() {  # name status rc load_before uptime_before rustc_count cmd note tool format [busy_before busy_after]
  cat >"$RAW/$1.meta.json" <<EOF
{"status": "$2", "rc": $3, "timeout_s": $TIMEOUT, "load_before": "$4", "files": $NFILES,
 "tool": "$9", "format": "${10}",
 "machine_busy_cpu_s": $(awk -v a="${11:-0}" -v b="${12:-0}" 'BEGIN {printf "%.2f", b - a}'),
 "uptime_before": $(json_str "$5"), "rustc_processes_before": $6,
 "load_after": "$(cut -d' ' -f1-3 /proc/loadavg)", "command": $(json_str "$7"), "note": $(json_str "$8")}
EOF
}

measure() {  # name tool format cmd...
  local name=$1 tool=$2 fmt=$3; shift 3
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
  "$BPY" bench/virtualize/treesample.py "$tpid" --out "$RAW/$name.tree.json" --interval 0.1 &
  local spid=$!
  set +e; wait "$tpid"; rc=$?; set -e
  busy1=$(cpu_busy_s)
  wait "$spid" || true
  if [[ $rc == 0 ]]; then status=ok
  elif [[ $rc == 124 || $rc == 137 ]]; then status=timeout
  else status=failed; fi
  write_meta "$name" "$status" "$rc" "$load" "$up" "$rustc" "$*" "" "$tool" "$fmt" "$busy0" "$busy1"
  local wall rss
  wall=$(grep 'Elapsed (wall' "$RAW/$name.time" | awk '{print $NF}')
  rss=$(awk '/Maximum resident/ {printf "%.0f", $NF*1024/1e6}' "$RAW/$name.time")
  say "   $name: $status, wall $wall, peak RSS $rss MB (log: $RAW/$name.log)"
  if [[ $status == failed ]]; then tail -8 "$RAW/$name.log" | sed 's/^/     | /' >&2; fi
}

VERIFY_ARGS=()
out_path() { if [[ $2 == json ]]; then echo "$OUTDIR/$1.json"; else echo "$OUTDIR/$1.parq"; fi; }

for tool in $TOOLS; do
  case "$tool" in
    chunkmill)
      for fmt in $FORMATS; do
        name=chunkmill-$fmt; out=$(out_path chunkmill "$fmt")
        if ((!CM_OK)); then
          write_meta "$name" skipped 0 "" "$(uptime)" 0 "" "no binary at $CHUNKMILL" chunkmill "$fmt"; continue
        fi
        if [[ $fmt == parquet && $CM_PARQUET == 0 ]]; then
          say "== $name: SKIPPED, 'chunkmill virtualize --help' does not list kerchunk-parquet"
          write_meta "$name" skipped 0 "" "$(uptime)" 0 "" "this chunkmill has no --format kerchunk-parquet" chunkmill "$fmt"; continue
        fi
        # shellcheck disable=SC2086
        cmd=("$CHUNKMILL" virtualize "$CM_INPUT" --concat-dim time --output "$out" --format "kerchunk-$fmt"
             --overwrite --no-progress ${CHUNKMILL_EXTRA_ARGS:-})
        measure "$name" chunkmill "$fmt" "${cmd[@]}"
        if grep -q '"status": "ok"' "$RAW/$name.meta.json" && ((CM_REPEAT > 0)); then
          # /usr/bin/time prints wall to 1/100 s: time the same command again, precisely
          wait_quiet
          say "   $name again, $CM_REPEAT timed runs after a warm-up (runtimes.py: perf_counter + wait4)"
          "${NICE[@]}" "$BPY" bench/virtualize/runtimes.py --repeat "$CM_REPEAT" --out "$RAW/$name.runs.json" \
            -- "${cmd[@]}" || true
        fi
        if grep -q '"status": "ok"' "$RAW/$name.meta.json"; then VERIFY_ARGS+=("$name=$out"); fi
      done ;;
    kerchunk|virtualizarr)
      for fmt in $FORMATS; do
        name=$tool-$fmt; out=$(out_path "$tool" "$fmt")
        measure "$name" "$tool" "$fmt" "$BPY" bench/virtualize/peers.py "$tool" --list "$LIST" --format "$fmt" \
          --out "$out" --workers "$WORKERS"
        if grep -q '"status": "ok"' "$RAW/$name.meta.json"; then VERIFY_ARGS+=("$name=$out"); fi
      done ;;
    listing) ;;
    *) say "unknown tool '$tool' in BENCH_TOOLS"; exit 2 ;;
  esac
done

# --- listing benchmark ---------------------------------------------------------------
list_rc=0
if [[ " $TOOLS " == *" listing "* ]]; then
  wait_quiet
  say "== listing the 50 000 chunks of $DATA/chunks50k.nc (best of $REPEAT, each a whole process; load $(cut -d' ' -f1 /proc/loadavg))"
  cm_args=()
  ((CM_OK)) && cm_args=(--chunkmill "$CHUNKMILL")
  echo "{\"load_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"busy_before\": $(cpu_busy_s)," >"$RAW/list-load.json"
  "${NICE[@]}" "$BPY" bench/virtualize/listing.py "$DATA/chunks50k.nc" --var v --expect 50000 --raw "$RAW" \
    --python "$BPY" --repeat "$REPEAT" "${cm_args[@]}" || list_rc=$?
  echo " \"busy_after\": $(cpu_busy_s), \"load_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$RAW/list-load.json"
fi

# --- verification (not measured) -----------------------------------------------------
verify_rc=0
if ((${#VERIFY_ARGS[@]})); then
  say "== checking every output against xarray.open_mfdataset of the originals (not measured)"
  "${NICE[@]}" "$BPY" bench/virtualize/verify.py --list "$LIST" --json "$RAW/verify.json" "${VERIFY_ARGS[@]}" || verify_rc=$?
fi
du -sb "$OUTDIR"/* 2>/dev/null >"$RAW/output-sizes.txt" || true
if [[ ${BENCH_KEEP_OUTPUTS:-0} != 1 ]]; then rm -rf "${OUTDIR:?}"/*; fi
"$BPY" -c 'import json,sys,subprocess; p=sys.argv[1]; d=json.load(open(p)); d["uptime_end"]=subprocess.check_output(["uptime"],text=True).strip(); json.dump(d,open(p,"w"),indent=1)' "$RAW/env.json"

# --- report --------------------------------------------------------------------------
"$BPY" bench/virtualize/report.py "$RAW" --md "$RESULTS.md" --json "$RESULTS.json" --set "$SET"
say "results: $RESULTS.md and $RESULTS.json (raw: $RAW)"
if [[ $verify_rc != 0 ]]; then say "some outputs do NOT match the original files (see above)"; exit 1; fi
if [[ $list_rc != 0 ]]; then say "the listing benchmark found wrong chunk lists (see above)"; exit 1; fi
