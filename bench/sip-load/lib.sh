# lib.sh - sourced by ../sip_calls.sh. Copied from the shared reference harness
# (../../../shared/bench-reference); the pyforward mode became the router mode.
# Starts/stops the hop under test as a child of the calling script, runs
# find-max-cps.sh REPS times per mode (modes interleaved, so slow drifts in
# background load hit every mode alike) and prints median and spread.
#
# Modes: direct         UAC -> UAS, no hop: the harness ceiling
#        kamN           Kamailio (kamailio/kamailio.cfg) with N UDP workers
#        kamN-ALLOC     the same with shm allocator ALLOC (qm, fm, tlsf)
#        router         callrouter serve (embedded PostgreSQL, call journal on),
#                       one tracking number routed to the UAS
# env (defaults): REPS=3 NUMBER=+441515550001 UAS_PORT=5090 UAC_PORT=5080
#   KAM_PORT=5070 ROUTER_PORT=5071 ROUTER_HTTP_PORT=18071 SIPPY_PORT=5072 (move the whole set if
#   another test holds them) PY=python3 (interpreter with callrouter installed)
#   PROXY_MAX_S=1800 (hard lifetime
#   of a hop) KAM_SHM_MB=1024 KAM_MEMMGR= KAM_ARGS= (Kamailio -m, -x, extras)
#   RESULTS_DIR=<this folder>/results; find-max-cps.sh's env passes.

REPS=${REPS:-3} NUMBER=${NUMBER:-+441515550001} UAS_PORT=${UAS_PORT:-5090}
PY=${PY:-python3} PROXY_MAX_S=${PROXY_MAX_S:-1800}
KAM_SHM_MB=${KAM_SHM_MB:-1024}      # tm keeps ~8 KB per transaction for 5 s after
                                    # it ends: 256 MB runs out near 1800 cps
KAM_MEMMGR=${KAM_MEMMGR:-}          # shm allocator: qm (Kamailio default), fm, tlsf
KAM_ARGS=${KAM_ARGS:-}              # extra kamailio options, e.g. "-b 4194304"
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
KAM_PORT=${KAM_PORT:-5070} ROUTER_PORT=${ROUTER_PORT:-5071}   # hop ports on 127.0.0.1
ROUTER_HTTP_PORT=${ROUTER_HTTP_PORT:-18071} SIPPY_PORT=${SIPPY_PORT:-5072}
SIPPY_B2BUA=${SIPPY_B2BUA:-$(dirname "$PY")/b2bua}   # pip install sippy (the test extra has it)
export UAS_PORT UAC_PORT=${UAC_PORT:-5080}            # for sipp-cps.sh
PROXY_PID='' PROXY_WRAP='' PROXY_TMP=''

port_busy() { ss -Hlun "sport = :$1" | grep -q .; }
wait_port() { local _; for _ in $(seq 50); do port_busy "$1" && return 0; sleep 0.1; done; return 1; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Kamailio in the foreground (-DD, log on stderr) with $1 UDP workers; the
# timeout wrapper is a backstop, the normal stop is stop_proxy by PID.
start_kamailio() {
  port_busy "$KAM_PORT" && { echo "UDP port $KAM_PORT already in use" >&2; return 1; }
  PROXY_TMP=$(mktemp -d /tmp/sipkam.XXXXXX)
  timeout -s TERM "$PROXY_MAX_S" kamailio -f "$HERE/kamailio/kamailio.cfg" -DD -E \
    -A "LISTEN_PORT=$KAM_PORT" -A "UAS_HOSTPORT=\"127.0.0.1:$UAS_PORT\"" \
    ${KAM_MEMMGR:+-x "$KAM_MEMMGR"} $KAM_ARGS -n "$1" -m "$KAM_SHM_MB" -M 16 \
    -P "$PROXY_TMP/kamailio.pid" -Y "$PROXY_TMP" -w "$PROXY_TMP" \
    >"$PROXY_TMP/kamailio.log" 2>&1 &
  PROXY_WRAP=$!
  local _; for _ in $(seq 50); do [ -s "$PROXY_TMP/kamailio.pid" ] && break; sleep 0.1; done
  wait_port "$KAM_PORT" && [ -s "$PROXY_TMP/kamailio.pid" ] ||
    { echo "kamailio did not start:"; tail -5 "$PROXY_TMP/kamailio.log"; return 1; } >&2
  PROXY_PID=$(cat "$PROXY_TMP/kamailio.pid")
}

# callrouter serve with a fresh embedded PostgreSQL, no rate limit, flood ban or
# concurrency cap (the figures measure throughput, not the defences), and NUMBER
# routed to the UAS; PROXY_PID is the Python process (its direct children, the
# PostgreSQL postmaster among them, count towards the CPU figures).
start_router() {
  port_busy "$ROUTER_PORT" && { echo "UDP port $ROUTER_PORT already in use" >&2; return 1; }
  PROXY_TMP=$(mktemp -d /tmp/siprouter.XXXXXX)
  chmod 755 "$PROXY_TMP"
  mkdir "$PROXY_TMP/dialplans"
  timeout -s TERM "$PROXY_MAX_S" "$PY" -m callrouter serve --data-dir "$PROXY_TMP/data" \
    --dialplans-dir "$PROXY_TMP/dialplans" --http-port "$ROUTER_HTTP_PORT" \
    --sip-port "$ROUTER_PORT" --sip-rate-per-second 1000000 --sip-rate-burst 1000000 \
    --sip-carrier-flood-requests 0 --sip-max-calls-per-trunk 0 --sip-max-calls-per-client 0 \
    >"$PROXY_TMP/router.log" 2>&1 &
  PROXY_WRAP=$!
  local _; for _ in $(seq 600); do grep -q ' ready$' "$PROXY_TMP/router.log" && break; sleep 0.1; done
  grep -q ' ready$' "$PROXY_TMP/router.log" ||
    { echo "callrouter did not start:"; tail -5 "$PROXY_TMP/router.log"; return 1; } >&2
  PROXY_PID=$(pgrep -P "$PROXY_WRAP" | head -1)
  local key api client
  key=$(sed -n 's/^.*operator key (shown once, store it now): //p' "$PROXY_TMP/router.log")
  api="http://127.0.0.1:$ROUTER_HTTP_PORT/v1"
  client=$(curl -sf -X POST "$api/clients" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' -d '{"name": "bench"}' |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])') || return 1
  curl -sf -o /dev/null -X POST "$api/numbers" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' \
    -d "{\"client_id\": \"$client\", \"e164\": \"$NUMBER\", \"destination\": \"sip:uas@127.0.0.1:$UAS_PORT\"}" ||
    { echo "could not create the tracking number"; return 1; } >&2
}

# sippy's b2bua in the foreground, statically routing every call to the UAS (the
# invocation of its README's benchmark); PROXY_PID is that one Python process.
start_sippy() {
  port_busy "$SIPPY_PORT" && { echo "UDP port $SIPPY_PORT already in use" >&2; return 1; }
  [ -x "$SIPPY_B2BUA" ] || { echo "no sippy b2bua at $SIPPY_B2BUA: pip install sippy" >&2; return 1; }
  PROXY_TMP=$(mktemp -d /tmp/sipsippy.XXXXXX)
  timeout -s TERM "$PROXY_MAX_S" "$SIPPY_B2BUA" --foreground=on --sip_address=127.0.0.1 \
    --sip_port="$SIPPY_PORT" --static_route="127.0.0.1:$UAS_PORT" --auth_enable=off \
    --acct_enable=off --logfile="$PROXY_TMP/sippy.log" --pidfile="$PROXY_TMP/sippy.pid" \
    --b2bua_socket="$PROXY_TMP/b2bua.sock" >"$PROXY_TMP/sippy.out" 2>&1 &
  PROXY_WRAP=$!
  wait_port "$SIPPY_PORT" ||
    { echo "sippy b2bua did not start:"; tail -5 "$PROXY_TMP/sippy.out"; return 1; } >&2
  PROXY_PID=$(pgrep -P "$PROXY_WRAP" | head -1)
}

# stop the hop by its PID, wait (bounded) for it and its wrapper to go
stop_proxy() {
  local _
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$PROXY_WRAP" 2>/dev/null || break; sleep 0.1; done
  # sippy's b2bua "schedules a safe stop" on TERM and may never get there: KILL after 5 s
  [ -n "$PROXY_PID" ] && kill -0 "$PROXY_WRAP" 2>/dev/null && kill -KILL "$PROXY_PID" 2>/dev/null
  for _ in $(seq 20); do kill -0 "$PROXY_WRAP" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$PROXY_WRAP" 2>/dev/null && kill -KILL "$PROXY_WRAP"
  wait "$PROXY_WRAP" 2>/dev/null
  [ -n "$PROXY_TMP" ] && { grep -hE 'WARN|ERR|CRIT|Trace|Error' "$PROXY_TMP"/*.log | tail -3 | sed 's/^/# hop log: /'; rm -rf "$PROXY_TMP"; }
  PROXY_PID='' PROXY_WRAP='' PROXY_TMP=''
}
trap 'stop_proxy >/dev/null 2>&1' EXIT
trap 'exit 130' INT TERM

# The SIPp scenario pair for a mode. sippy's b2bua answers the rr UAC's BYE (Route
# set, remote Contact as Request-URI) only after SIPp's 10 s receive timeout, and
# SIPp's built-in uac fails a call on the 180 that sippy relays after its 200 OK
# under load; scenarios/uac-b2bua.xml sends ACK and BYE to the hop (a B2BUA is the
# far end of the caller's dialog) and ignores late provisionals, as uac-rr.xml does.
scenario_for() { if [ "$1" = sippy ]; then echo b2bua; else echo "${SCEN:-rr}"; fi; }

# run_baseline NAME MODE... : REPS x modes, log to RESULTS_DIR/NAME-<stamp>.log
run_baseline() {
  local name=$1 rep mode target res n; shift
  mkdir -p "$RESULTS_DIR"
  local log; log="$RESULTS_DIR/$name-$(date -u +%Y%m%dT%H%M%SZ).log"
  {
    trap 'stop_proxy >/dev/null 2>&1' EXIT   # this block is a subshell
    trap 'exit 130' INT TERM
    echo "# $name $(date -u +%FT%TZ) on $(nproc) cores; sipp $(sipp -v 2>&1 | awk '/SIPp v/{print $2}')" \
         "kamailio $(kamailio -v 2>/dev/null | awk 'NR==1{print $3}') $("$PY" -V 2>&1)"
    echo "# modes: $*  reps: $REPS  number: $NUMBER"
    for rep in $(seq "$REPS"); do
      for mode in "$@"; do
        echo "# rep=$rep mode=$mode start $(date -u +%T) load: $(loadavg)"
        case $mode in
          direct)  target=127.0.0.1:$UAS_PORT ;;
          kam*-*)  n=${mode%-*}; KAM_MEMMGR=${mode#*-} start_kamailio "${n#kam}" || continue
                   target=127.0.0.1:$KAM_PORT ;;
          kam*)    start_kamailio "${mode#kam}" || continue; target=127.0.0.1:$KAM_PORT ;;
          router)  start_router || continue; target=127.0.0.1:$ROUTER_PORT ;;
          sippy)   start_sippy || continue; target=127.0.0.1:$SIPPY_PORT ;;
          *)       echo "# unknown mode $mode"; continue ;;
        esac
        res=$(SCEN=$(scenario_for "$mode") WATCH_PID=$PROXY_PID "$HERE/find-max-cps.sh" "$target" "$NUMBER" | sed "s/^/$mode /" | tee /dev/stderr | tail -1)
        stop_proxy
        echo "# rep=$rep mode=$mode end $(date -u +%T) load: $(loadavg)"
        echo "final rep=$rep $res"
      done
    done
  } 2>&1 | tee "$log"
  # median and spread of max_cps per mode
  echo "# summary (max_cps over $REPS runs) from $log"
  awk '$1=="final"{ for (i = 4; i <= NF; i++) if ($i ~ /^max_cps=/) v[$3] = v[$3] " " substr($i, 9) }
       END{ for (m in v) print m, v[m] }' "$log" | sort | while read -r mode vals; do
    echo "$vals" | tr ' ' '\n' | sort -n | awk -v m="$mode" '{x[NR]=$1}
      END{ med = (NR % 2) ? x[(NR+1)/2] : (x[NR/2] + x[NR/2+1]) / 2
           printf "%-11s median=%-6s min=%-6s max=%-6s runs=%s\n", m, med, x[1], x[NR], NR }'
  done | tee -a "$log"
}
