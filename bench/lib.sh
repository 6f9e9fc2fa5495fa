# Shell helpers shared by bench/*/run.sh (sourced after `cd` to the repository root). They read
# the caller's PY (interpreter that makes venvs), BPY (the bench venv's python) and
# BENCH_QUIET_WAIT at call time.

say() { printf '%s\n' "run.sh: $*" >&2; }

ensure_venv() {  # dir requirements-file: (re)made when the requirements' hash changes
  local dir=$1 req=$2 stamp want
  stamp=$dir/.requirements.sha256
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [[ -x $dir/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return 0
  fi
  command -v "$PY" >/dev/null || { say "$PY not found: set BENCH_PYTHON to a Python 3.12 interpreter"; exit 1; }
  say "creating venv $dir from $req ..."
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$dir/bin/python" -m pip install -q -r "$req"
  echo "$want" >"$stamp"
}

json_str() { "$BPY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

cpu_busy_s() {  # machine-wide busy CPU seconds since boot (user+nice+system+irq+softirq)
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / {printf "%.2f", ($2+$3+$4+$7+$8)/hz}' /proc/stat
}

wait_quiet() {  # up to BENCH_QUIET_WAIT seconds for a 10 s window with < 0.5 CPU s busy
  local limit=${BENCH_QUIET_WAIT:-0} waited=0 a b
  ((limit > 0)) || return 0
  while ((waited < limit)); do
    a=$(cpu_busy_s); sleep 10; b=$(cpu_busy_s); waited=$((waited + 10))
    if awk -v a="$a" -v b="$b" 'BEGIN {exit !(b - a < 0.5)}'; then
      ((waited > 10)) && say "   (waited ${waited}s for a quiet machine)"
      return 0
    fi
  done
  say "   machine still busy after ${limit}s; measuring anyway (see the others' CPU column)"
}
