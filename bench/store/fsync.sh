#!/bin/bash
# The cost of a durable LocalStore::set (fsync of each value and of its directory before the
# next step) on the rechunk benchmark: the same job with two chunkmill binaries, one built with
# the fsyncs and one without, alternated ROUNDS times so that load on a shared machine hits both.
# Usage: bench/store/fsync.sh BIN_WITH_FSYNC BIN_WITHOUT_FSYNC [ROUNDS] [SRC]
# Prints one line per run (wall s, user s, sys s, peak RSS MB, fs output blocks, load) and writes
# them to bench/out/fsync-runs.tsv. The source defaults to bench/data/src.zarr (make_data.py).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
with="$1" without="$2" rounds="${3:-2}" src="${4:-$here/bench/data/src.zarr}"
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install -y time)" >&2; exit 2; }
[ -d "$src" ] || { echo "$src is missing: run bench/rechunk/make_data.py first" >&2; exit 2; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mkdir -p "$here/bench/out"
tsv="$here/bench/out/fsync-runs.tsv"
printf 'variant\twall_s\tuser_s\tsys_s\tpeak_rss_mb\tfs_outputs\tload1\n' | tee "$tsv"
for round in $(seq 1 "$rounds"); do
    for variant in fsync no-fsync; do
        bin="$with"; [ "$variant" = no-fsync ] && bin="$without"
        rm -rf "$out/t.zarr" "$out/work"
        sync
        load="$(cut -d' ' -f1 /proc/loadavg)"
        /usr/bin/time -v -o "$out/time.txt" "$bin" rechunk "$src" "$out/t.zarr" \
            --chunks 8760,18,36 --max-mem 512MB --codec zstd:1 --no-progress \
            --work-dir "$out/work" >/dev/null
        awk -v v="$variant" -v l="$load" -F': ' '
            /Elapsed/ { n = split($2, p, ":"); w = p[n] + (n > 1 ? 60 * p[n-1] : 0) }
            /User time/ { u = $2 } /System time/ { s = $2 }
            /Maximum resident/ { r = $2 / 1024 } /File system outputs/ { o = $2 }
            END { printf "%s\t%.1f\t%.1f\t%.1f\t%.0f\t%d\t%s\n", v, w, u, s, r, o, l }' \
            "$out/time.txt" | tee -a "$tsv"
    done
done
