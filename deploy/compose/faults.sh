#!/usr/bin/env bash
# The faults of the compose cluster, for deploy/compose/fault-suite.sh and soak.sh: sourced, not
# run. The sourcing script defines `compose` (the cluster's docker-compose), `log`, NETWORK (the
# cluster's network), and for `ingestor-kill` `start_ingestor PHASE RUN` and the globals `phase`
# and INGESTOR (the phase's ingestor container, replaced by the restarted one).
#   inject FAULT INGESTOR_CONTAINER     one fault, then its repair; non-zero when it failed

# The Nth container of a service. sed reads the whole listing: `head` stopped reading after its
# line, and a listing written after that died of SIGPIPE, which pipefail made the suite's exit
# (141, seen once in worker-partition).
container() { compose ps -q "$1" | sed -n "${2:-1}p"; }

address() { docker inspect --format "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$1"; }

# Runs a command of this host (iptables, tc) inside a container's network namespace: the images
# carry neither tool, and a fault must not need privileges inside the container.
in_netns() {
  local target="$1"; shift
  nsenter --target "$(docker inspect --format '{{.State.Pid}}' "$target")" --net "$@"
}

# Drops every packet between a container and the given addresses, both ways (`-D` undoes it).
firewall() {
  local action="$1" target="$2" peer; shift 2
  for peer in "$@"; do
    in_netns "$target" iptables "$action" INPUT -s "$peer" -j DROP
    in_netns "$target" iptables "$action" OUTPUT -d "$peer" -j DROP
  done
}

# A slow, lossy link on a container: egress at $2 (tc tbf; this kernel has no netem) and a
# random $3 of packets dropped each way (iptables statistic). `slow_link clear TARGET` undoes it.
slow_link() {
  if [[ "$1" == clear ]]; then
    in_netns "$2" tc qdisc del dev eth0 root || true
    in_netns "$2" iptables -D INPUT -m statistic --mode random --probability "$3" -j DROP || true
    in_netns "$2" iptables -D OUTPUT -m statistic --mode random --probability "$3" -j DROP || true
    return
  fi
  in_netns "$1" tc qdisc add dev eth0 root tbf rate "$2" burst 64kbit latency 500ms
  in_netns "$1" iptables -A INPUT -m statistic --mode random --probability "$3" -j DROP
  in_netns "$1" iptables -A OUTPUT -m statistic --mode random --probability "$3" -j DROP
}

# 1 when the coordinator in that container holds the leader term by its own account (its
# /metrics, read from this host), 0 when not, ? when it cannot be read.
leading() {
  python3 - "$(address "$1")" <<'PY'
import sys, urllib.request
try:
    text = urllib.request.urlopen(f"http://{sys.argv[1]}:9464/metrics", timeout=2).read().decode()
    print(next(line.split()[1] for line in text.splitlines()
               if line.startswith("framefleet_coordinator_is_leader ")))
except Exception:
    print("?")
PY
}

# The leader loses etcd only; clients still reach it. Samples both coordinators' own view every
# second: the cut-off one must step down, the other must take the lead, and never may both hold
# it at once (the old one would then write unfenced; its writes are fenced by the term anyway).
# From 8 s after the cut, 10 `framefleet status` calls to the pair must all succeed: the
# cut-off coordinator reports NOT_SERVING and clients leave it out. Fails the phase otherwise.
leader_loses_etcd() {
  local id other target other_target etcd_addresses=() sample old_view new_view both=0 stepped_down="" took_over="" calls failed_calls
  id="$(leader)"; [[ -n "$id" ]] || { log "no leader found"; return 1; }
  other="coordinator-1"; [[ "$id" == coordinator-1 ]] && other="coordinator-2"
  target="$(container "$id")"; other_target="$(container "$other")"
  for member in etcd-1 etcd-2 etcd-3; do etcd_addresses+=("$(address "$(container "$member")")"); done
  firewall -I "$target" "${etcd_addresses[@]}"
  calls="$(mktemp)"
  (sleep 8; compose run --rm -T --entrypoint bash cli -c \
    'failed=0; for call in $(seq 10); do framefleet status >/dev/null 2>&1 || failed=$((failed + 1)); sleep 1; done; echo $failed' \
    >"$calls" 2>/dev/null) &
  for sample in $(seq 1 25); do
    old_view="$(leading "$target")"; new_view="$(leading "$other_target")"
    [[ "$old_view" == 1 && "$new_view" == 1 ]] && both=$((both + 1))
    [[ -z "$stepped_down" && "$old_view" == 0 ]] && stepped_down="$sample"
    [[ -z "$took_over" && "$new_view" == 1 ]] && took_over="$sample"
    sleep 1
  done
  wait
  firewall -D "$target" "${etcd_addresses[@]}"
  failed_calls="$(cat "$calls")"; rm -f "$calls"
  sleep 3
  old_view="$(leading "$target")"; new_view="$(leading "$other_target")"
  log "$id cut off from etcd: stepped down after ${stepped_down:-never} s, $other led after ${took_over:-never} s, samples with two leaders: $both; status calls failed: ${failed_calls:-?} of 10; after healing $id=$old_view $other=$new_view"
  [[ -n "$stepped_down" && -n "$took_over" && "$both" == 0 && "$old_view" == 0 && "$new_view" == 1 && "$failed_calls" == 0 ]]
}

leader() {
  compose run --rm -T cli --json status 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader_id",""))' || true
}

inject() {
  local fault="$1" phase_ingestor="$2" target
  case "$fault" in
    worker-kill)
      target="$(container worker 1)"; docker kill --signal KILL "$target" >/dev/null
      sleep 5; docker start "$target" >/dev/null ;;
    ingestor-kill)
      # The frames its killed run wrote must all be processed; the restarted ingestor
      # captures the same channels again as a new run (epoch).
      docker kill --signal KILL "$phase_ingestor" >/dev/null
      sleep 3; INGESTOR="$(start_ingestor "$phase" restarted)" ;;
    leader-kill)
      local id; id="$(leader)"; [[ -n "$id" ]] || { log "no leader found"; return 1; }
      target="$(container "$id")"; docker kill --signal KILL "$target" >/dev/null
      sleep 5; docker start "$target" >/dev/null ;;
    etcd-member-kill)
      target="$(container etcd-2)"; docker kill --signal KILL "$target" >/dev/null
      sleep 5; docker start "$target" >/dev/null ;;
    broker-kill)
      # One of the two brokers: clients reconnect through `kafka` to the other.
      target="$(container broker)"; docker kill --signal KILL "$target" >/dev/null
      sleep 5; docker start "$target" >/dev/null ;;
    brokers-kill)
      # Both brokers at once: no broker for 5 s.
      local second; target="$(container broker)"; second="$(container broker-2)"
      docker kill --signal KILL "$target" "$second" >/dev/null
      sleep 5; docker start "$target" "$second" >/dev/null ;;
    postgres-kill)
      target="$(container postgres)"; docker kill --signal KILL "$target" >/dev/null
      sleep 5; docker start "$target" >/dev/null ;;
    worker-pause)
      # Frozen (SIGSTOP-like, the cgroup freezer) past the group's 10-s session timeout.
      target="$(container worker 1)"; docker pause "$target" >/dev/null
      sleep 15; docker unpause "$target" >/dev/null ;;
    worker-partition)
      target="$(container worker 1)"; docker network disconnect "$NETWORK" "$target"
      sleep 15; docker network connect "$NETWORK" "$target" ;;
    ingestor-partition)
      docker network disconnect "$NETWORK" "$phase_ingestor"
      sleep 30; docker network connect "$NETWORK" "$phase_ingestor" ;;
    leader-partition)
      # The leader loses etcd (and everyone else): the other coordinator must take over, and
      # the cut-off one's writes are fenced off.
      local id new_id; id="$(leader)"; [[ -n "$id" ]] || { log "no leader found"; return 1; }
      target="$(container "$id")"; docker network disconnect "$NETWORK" "$target"
      sleep 20; new_id="$(leader)"
      docker network connect "$NETWORK" "$target"
      log "leader while $id was cut off: ${new_id:-none}"
      [[ -n "$new_id" && "$new_id" != "$id" ]] || { log "no other coordinator took the lead"; return 1; } ;;
    leader-etcd-partition) leader_loses_etcd ;;
    etcd-member-partition)
      target="$(container etcd-2)"; docker network disconnect "$NETWORK" "$target"
      sleep 20; docker network connect "$NETWORK" "$target" ;;
    broker-slow-network)
      # Clients, and the brokers' own storage, reach each broker through a 4 Mbit/s link
      # losing 5 % of packets each way for 20 s.
      local second; target="$(container broker)"; second="$(container broker-2)"
      slow_link "$target" 4mbit 0.05; slow_link "$second" 4mbit 0.05
      sleep 20; slow_link clear "$target" 0.05; slow_link clear "$second" 0.05 ;;
    broker-slow-storage)
      # The broker's storage (PostgreSQL) answers through a 2 Mbit/s link losing 5 % of
      # packets each way for 20 s: a slow disk, as the broker sees it.
      target="$(container postgres)"; slow_link "$target" 2mbit 0.05
      sleep 20; slow_link clear "$target" 0.05 ;;
    *) log "unknown fault $fault"; return 1 ;;
  esac
}
