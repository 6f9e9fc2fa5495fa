#!/usr/bin/env bash
# Before/after comparison of two chunkmill binaries on the rechunk and convert benchmark
# workloads, alternating, in one run (same machine, same page cache):
#   bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
# Needs bench/data/src.zarr (bench/rechunk/make_data.py, as bench/rechunk/run.sh makes it)
# and bench/data/virtualize/day_*.nc (bench/virtualize/make_data.py). Prints one line per run:
# job, binary, wall s, user+sys CPU s, peak RSS MB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
old=$1 new=$2 rounds=${3:-3}
out=$(mktemp -d "${TMPDIR:-/tmp}/chunkmill-ab.XXXXXX")
trap 'rm -rf "$out"' EXIT
# Warm the page cache with both sources, untimed.
cat bench/data/src.zarr/*/* bench/data/virtualize/day_*.nc >/dev/null 2>&1 || true
measure() {  # job binary args...
  local job=$1 bin=$2; shift 2
  rm -rf "$out/t.zarr" "$out/t.zarr.work"
  /usr/bin/time -v "$bin" "$@" >/dev/null 2>"$out/time" || { cat "$out/time" >&2; exit 1; }
  awk -v job="$job" -v bin="$bin" '
    /Elapsed \(wall clock\)/ { n=split($NF,p,":"); wall=(n==3? p[1]*3600+p[2]*60+p[3] : p[1]*60+p[2]) }
    /User time/ { u=$NF } /System time/ { s=$NF } /Maximum resident/ { rss=$NF/1024 }
    END { printf "%-8s %-45s wall %6.2f s  cpu %6.2f s  rss %5.0f MB\n", job, bin, wall, u+s, rss }' "$out/time"
}
for ((r = 1; r <= rounds; r++)); do
  for bin in "$old" "$new"; do
    measure rechunk "$bin" rechunk bench/data/src.zarr "$out/t.zarr" --chunks 8760,18,36 \
      --max-mem 512MB --codec zstd:1 --no-progress --overwrite
  done
done
for ((r = 1; r <= rounds; r++)); do
  for bin in "$old" "$new"; do
    measure convert "$bin" convert 'bench/data/virtualize/day_*.nc' "$out/t.zarr" \
      --concat-dim time --chunks time=-1,lat=18,lon=36 --max-mem 1GB --no-progress
  done
done
