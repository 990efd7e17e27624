#!/usr/bin/env bash
# sip_calls.sh - calls per second through callrouter, beside Kamailio, in one run.
#
# usage: bench/sip_calls.sh            (needs: apt-get install kamailio sip-tester curl)
# For each of REPS rounds (default 1), finds the highest rate with >= 99.5 % of calls
# OK, <= 1 % retransmissions and >= 95 % of the offered rate achieved, for
#   kam2    Kamailio 5.6 as a record-routing stateful proxy, 2 UDP workers
#   router  callrouter serve (B2BUA, dialplan, call journal to PostgreSQL)
# with SIPp uac -> hop -> SIPp uas and 1 s calls; prints both, the ratio, and the
# post-dial delay (INVITE to 200, p50/p99) each hop adds at half the router's maximum.
# env: see sip-load/lib.sh and sip-load/find-max-cps.sh (RATES, STEP_SECS, ...).
set -u
HERE=$(cd "$(dirname "$0")/sip-load" && pwd)
export PY=${PY:-$(command -v python3)}
. "$HERE/lib.sh"
command -v kamailio >/dev/null && command -v sipp >/dev/null && command -v curl >/dev/null ||
  { echo "needs: apt-get install kamailio sip-tester curl" >&2; exit 2; }
REPS=${REPS:-1}
summary=$(run_baseline sip-calls kam2 router | tail -2)
echo "$summary"
kam=$(echo "$summary" | awk '$1=="kam2"{sub("median=","",$2); print $2}')
router=$(echo "$summary" | awk '$1=="router"{sub("median=","",$2); print $2}')
[ -n "$kam" ] && [ -n "$router" ] || { echo "no result" >&2; exit 1; }
awk -v r="$router" -v k="$kam" 'BEGIN{ printf "max calls/s: router %s, kamailio %s, ratio %.2f\n", r, k, (k > 0 ? r / k : 0) }'
half=$(( ${router%.*} / 2 )); [ "$half" -ge 1 ] || half=1
calls=$(( half * 10 ))
for mode in router kam2; do
  case $mode in
    router) start_router || exit 1; target=127.0.0.1:$ROUTER_PORT ;;
    kam2)   start_kamailio 2 || exit 1; target=127.0.0.1:$KAM_PORT ;;
  esac
  line=$(WATCH_PID=$PROXY_PID "$HERE/sipp-cps.sh" "$target" "$NUMBER" "$half" "$calls")
  stop_proxy >/dev/null
  echo "$mode at $half calls/s: $(echo "$line" | tr ' ' '\n' | grep -E '^(ok_pct|setup_p50_ms|setup_p99_ms|proxy_us_per_call|achieved_cps)=' | tr '\n' ' ')"
done
