#!/usr/bin/env bash
# sip_calls.sh - calls per second through callrouter, sippy's b2bua and Kamailio, in one run.
#
# usage: bench/sip_calls.sh   (needs: apt-get install kamailio sip-tester curl; pip install sippy)
# For each of REPS rounds (default 1), finds the highest rate with >= 99.5 % of calls
# OK, <= 1 % retransmissions and >= 95 % of the offered rate achieved, for
#   kam2    Kamailio 5.6 as a record-routing stateful proxy, 2 UDP workers
#   sippy   sippy 2.5's b2bua, static route to the UAS, auth and accounting off
#   router  callrouter serve (B2BUA, dialplan, call journal to PostgreSQL)
# with SIPp uac -> hop -> SIPp uas and 1 s calls; prints each maximum and the ratios.
# Then each hop carries half the router's maximum (the same rate for all three) and
# the run prints the CPU per call over the hop's whole process tree (serve with its
# PostgreSQL backends and media workers; Kamailio with all its children) and the
# post-dial delay (INVITE to 200, p50/p99) each hop adds, with ratios.
# env: see sip-load/lib.sh and sip-load/find-max-cps.sh (RATES, STEP_SECS, ...);
# MODES (default "kam2 sippy router") picks the hops; HALF_RATE sets the rate of the
# second part instead of half the router's maximum.
set -u
HERE=$(cd "$(dirname "$0")/sip-load" && pwd)
export PY=${PY:-$(command -v python3)}
REPS=${REPS:-1}   # before lib.sh, whose default is 3
. "$HERE/lib.sh"
command -v kamailio >/dev/null && command -v sipp >/dev/null && command -v curl >/dev/null ||
  { echo "needs: apt-get install kamailio sip-tester curl" >&2; exit 2; }
MODES=${MODES:-"kam2 sippy router"}
# shellcheck disable=SC2086  # MODES is a word list
summary=$(run_baseline sip-calls $MODES | sed -n '/^# summary/,$p' | tail -n +2)
echo "$summary"
max_of() { echo "$summary" | awk -v m="$1" '$1==m{sub("median=","",$2); print $2}'; }
router=$(max_of router)
[ -n "$router" ] || { echo "no result for the router" >&2; exit 1; }
for mode in $MODES; do
  [ "$mode" = router ] && continue
  other=$(max_of "$mode")
  awk -v r="$router" -v o="${other:-0}" -v m="$mode" \
    'BEGIN{ printf "max calls/s: router %s, %s %s, ratio router/%s %.2f\n", r, m, o, m, (o > 0 ? r / o : 0) }'
done
# HALF_RATE overrides (a machine so loaded that the router passes no step still
# compares CPU per call at a rate every hop carries)
half=${HALF_RATE:-$(( ${router%.*} / 2 ))}; [ "$half" -ge 1 ] || half=1
calls=$(( half * 10 ))
declare -A us p50 p99
for mode in $MODES; do
  case $mode in
    router) start_router || continue; target=127.0.0.1:$ROUTER_PORT ;;
    sippy)  start_sippy || continue; target=127.0.0.1:$SIPPY_PORT ;;
    kam*)   start_kamailio "${mode#kam}" || continue; target=127.0.0.1:$KAM_PORT ;;
  esac
  line=$(SCEN=$(scenario_for "$mode") WATCH_PID=$PROXY_PID "$HERE/sipp-cps.sh" "$target" "$NUMBER" "$half" "$calls")
  stop_proxy >/dev/null
  pick() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k{print $2}'; }
  us[$mode]=$(pick proxy_us_per_call) p50[$mode]=$(pick setup_p50_ms) p99[$mode]=$(pick setup_p99_ms)
  echo "$mode at $half calls/s: ok_pct=$(pick ok_pct) achieved_cps=$(pick achieved_cps)" \
    "cpu_ms_per_call(tree)=$(awk -v u="${us[$mode]}" 'BEGIN{ printf "%.2f", u / 1000 }')" \
    "cpu_ms_per_call(hop process alone)=$(awk -v u="$(pick proxy_own_us_per_call)" 'BEGIN{ printf "%.2f", u / 1000 }')" \
    "setup_p50_ms=${p50[$mode]} setup_p99_ms=${p99[$mode]}"
done
for mode in $MODES; do
  [ "$mode" = router ] && continue
  awk -v r="${us[router]:-0}" -v o="${us[$mode]:-0}" -v m="$mode" \
    'BEGIN{ printf "cpu per call at half load: router/%s %.2f\n", m, (o > 0 ? r / o : 0) }'
done
