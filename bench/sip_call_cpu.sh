#!/usr/bin/env bash
# sip_call_cpu.sh - CPU per call of serve against a reference tree of callrouter, in one run.
#
# usage: bench/sip_call_cpu.sh REF_TREE [RATE] [CALLS]
#   REF_TREE  a directory holding another version's callrouter/ package (the reference), e.g.
#             mkdir /tmp/ref && git archive main callrouter | tar -x -C /tmp/ref
#   RATE      calls/s offered to each (default 100), CALLS per measured run (default 2000)
# Starts serve from REF_TREE, then from this tree (PYTHONPATH), REPS times alternating; each
# gets WARM calls (default 500) at RATE first, unmeasured (start-up work, first database
# writes), then CALLS measured by sip-load/sipp-cps.sh: CPU per call of serve alone and of its
# whole process tree (PostgreSQL, media worker) from /proc, post-dial delay, and the load
# average. PROFILE=1 also records serve with py-spy (raw, into RESULTS_DIR) during each run.
# Prints each run, then the ratios this/reference of the medians. Env: see sip-load/lib.sh.
set -u
HERE=$(cd "$(dirname "$0")/sip-load" && pwd)
TREE=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] && [ -d "$1/callrouter" ] || { sed -n '2,/^set -u/p' "$0" | sed '$d'; exit 2; }
REF=$(cd "$1" && pwd) RATE=${2:-100} CALLS=${3:-2000} WARM=${WARM:-500} REPS=${REPS:-2}
export PY=${PY:-$(command -v python3)}
. "$HERE/lib.sh"
mkdir -p "$RESULTS_DIR" && RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)
# `python -m callrouter` puts the working directory first on sys.path, ahead of PYTHONPATH:
# started from inside a checkout, both sides would run that checkout. Start them from the
# results folder (which also takes serve's relative recordings/ directory), and say which
# package each side really imports.
cd "$RESULTS_DIR"
for tree in "$REF" "$TREE"; do
  echo "PYTHONPATH=$tree imports $(PYTHONPATH=$tree "$PY" -c 'import callrouter; print(callrouter.__file__)')"
done
pick() { echo "$2" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k{print $2}'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END{print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
declare -A tree_us own_us
for rep in $(seq "$REPS"); do
  for side in reference this; do
    [ "$side" = reference ] && export PYTHONPATH=$REF || export PYTHONPATH=$TREE
    start_router || continue
    "$HERE/sipp-cps.sh" "127.0.0.1:$ROUTER_PORT" "$NUMBER" "$RATE" "$WARM" >/dev/null
    spy=''
    if [ "${PROFILE:-0}" = 1 ]; then
      py-spy record -r 200 -d $(( CALLS / RATE - 2 )) -f raw -o "$RESULTS_DIR/serve-$side-$rep.txt" \
        --pid "$PROXY_PID" >/dev/null 2>&1 & spy=$!
    fi
    line=$(WATCH_PID=$PROXY_PID "$HERE/sipp-cps.sh" "127.0.0.1:$ROUTER_PORT" "$NUMBER" "$RATE" "$CALLS")
    [ -n "$spy" ] && wait "$spy"
    stop_proxy >/dev/null
    tree_us[$side]="${tree_us[$side]:-} $(pick proxy_us_per_call "$line")"
    own_us[$side]="${own_us[$side]:-} $(pick proxy_own_us_per_call "$line")"
    echo "$side rep=$rep load=$(loadavg | tr ' ' ,) ok_pct=$(pick ok_pct "$line")" \
      "achieved_cps=$(pick achieved_cps "$line") setup_p50_ms=$(pick setup_p50_ms "$line")" \
      "setup_p99_ms=$(pick setup_p99_ms "$line") cpu_us_per_call_tree=$(pick proxy_us_per_call "$line")" \
      "cpu_us_per_call_serve=$(pick proxy_own_us_per_call "$line")"
  done
done
for kind in tree serve; do
  if [ "$kind" = tree ]; then r=$(echo "${tree_us[reference]:-}" | median); t=$(echo "${tree_us[this]:-}" | median)
  else r=$(echo "${own_us[reference]:-}" | median); t=$(echo "${own_us[this]:-}" | median); fi
  awk -v r="${r:-0}" -v t="${t:-0}" -v k="$kind" 'BEGIN{ printf "CPU per call (%s), median: reference %.2f ms, this %.2f ms: ratio %.2f\n", k, r/1000, t/1000, (r > 0 ? t/r : 0) }'
done
