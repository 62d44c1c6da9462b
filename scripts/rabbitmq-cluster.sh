#!/usr/bin/env bash
# rabbitmq-cluster.sh: a private 3-node RabbitMQ cluster on loopback for tests.
#
# Usage: scripts/rabbitmq-cluster.sh COMMAND [N]
#
#   start        start the nodes (three by default; fresh data when none is
#                running), join them into one cluster, wait until each answers
#                AMQP and all are running members. Idempotent: nodes already
#                up are kept, a node that is down is started and rejoins, a
#                node whose app was stopped is started. About 35 s from
#                nothing on two cores, 5 s when all are up.
#   stop         stop all nodes (graceful, SIGKILL after DE_RABBIT_TIMEOUT).
#                Idempotent. Data and logs stay until the next fresh start.
#   status       one line per node (pid, AMQP port, app) and the running
#                cluster members; exit 0 when all are up and joined,
#                3 when no node runs, 1 otherwise.
#   kill N       SIGKILL node N's beam process (pid from its pid file, checked
#                against the process environment) and wait until it is gone
#                and its AMQP port closed (under a second).
#   restart N    stop node N if it runs, start it again, wait until it answers
#                AMQP and has rejoined the cluster (10-20 s here).
#   stop-app N   rabbitmqctl stop_app on node N (the Erlang VM stays up).
#   start-app N  rabbitmqctl start_app on node N; wait for AMQP and the cluster.
#   addrs        print the AMQP addresses, one a line (host:port).
#   nodes        print "N nodename host:port" for each node.
#   ctl N ARGS   run rabbitmqctl -n <node N> ARGS with the cluster's cookie.
#   clean        stop, then remove the base directory.
#
# Environment (defaults in brackets):
#   DE_RABBIT_CLUSTER_DIR   base directory [${TMPDIR:-/tmp}/domainevents-rabbit-cluster]
#   DE_RABBIT_CLUSTER_PORT  AMQP port of node 0; node N listens on PORT+N and
#                           its Erlang distribution on 20000+PORT+N [5680: 5681-5683, 25681-25683]
#   DE_RABBIT_CLUSTER_NAME  node name prefix; node N is <prefix>N@localhost [de-c]
#   DE_RABBIT_SBIN          directory of the real rabbitmq-server and rabbitmqctl
#                           [/usr/lib/rabbitmq/bin when present, else from PATH]
#   DE_RABBIT_TIMEOUT       seconds to wait for a node or the cluster [180]
#   DE_RABBIT_CLUSTER_NODES number of nodes, 1 to 5 [3]; 1 gives a single
#                           throwaway node (with its own DIR, PORT and NAME)
#
# Isolation from the machine's own node (rabbit@<host> on 5672): every
# rabbitmqctl call here passes -n with one of our node names; each node has
# its own config file, env file, enabled-plugins file (empty), data and log
# directories; the cluster's Erlang cookie lives in the base directory (HOME
# points there for our nodes and CLI calls only), so our CLI cannot talk to
# the machine's node even by mistake. Processes are only ever signalled by
# the pid in our own pid file after checking that the process carries our
# node name in its environment; nothing is killed by name.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

BASE="${DE_RABBIT_CLUSTER_DIR:-${TMPDIR:-/tmp}/domainevents-rabbit-cluster}"
PORT0="${DE_RABBIT_CLUSTER_PORT:-5680}"
PREFIX="${DE_RABBIT_CLUSTER_NAME:-de-c}"
TIMEOUT="${DE_RABBIT_TIMEOUT:-180}"
COUNT="${DE_RABBIT_CLUSTER_NODES:-3}"
case "$COUNT" in 1|2|3|4|5) ;; *) echo "rabbitmq-cluster: DE_RABBIT_CLUSTER_NODES must be 1 to 5, got '$COUNT'" >&2; exit 1 ;; esac
mapfile -t NODES < <(seq 1 "$COUNT")
case "$PORT0" in ''|*[!0-9]*) echo "rabbitmq-cluster: DE_RABBIT_CLUSTER_PORT must be a port number, got '$PORT0'" >&2; exit 1 ;; esac
case "$TIMEOUT" in ''|*[!0-9]*) echo "rabbitmq-cluster: DE_RABBIT_TIMEOUT must be whole seconds, got '$TIMEOUT'" >&2; exit 1 ;; esac

die() { echo "rabbitmq-cluster: $*" >&2; exit 1; }
say() { echo "rabbitmq-cluster: $*"; }

find_sbin() {
  if [ -n "${DE_RABBIT_SBIN:-}" ]; then
    echo "$DE_RABBIT_SBIN"
  elif [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    # Debian/Ubuntu: /usr/sbin/rabbitmq-server is a wrapper that switches to
    # the rabbitmq user and the machine's cookie; the real scripts are here.
    echo /usr/lib/rabbitmq/bin
  elif command -v rabbitmq-server >/dev/null 2>&1; then
    dirname "$(command -v rabbitmq-server)"
  else
    return 1
  fi
}
SBIN="$(find_sbin)" || die "rabbitmq-server not found: install it (Debian: apt-get install rabbitmq-server) or set DE_RABBIT_SBIN"
[ -x "$SBIN/rabbitmq-server" ] || die "$SBIN/rabbitmq-server is not executable (DE_RABBIT_SBIN)"
[ -x "$SBIN/rabbitmqctl" ] || die "$SBIN/rabbitmqctl is not executable (DE_RABBIT_SBIN)"

check_n() {
  case "${1:-}" in
    [1-9]) [ "$1" -le "$COUNT" ] && return 0 ;;
  esac
  die "node number must be 1 to $COUNT, got '${1:-}'"
}

node_name() { echo "${PREFIX}$1@localhost"; }
node_port() { echo $((PORT0 + $1)); }
dist_port() { echo $((20000 + PORT0 + $1)); }
node_dir()  { echo "$BASE/node$1"; }
pid_file()  { echo "$(node_dir "$1")/beam.pid"; }

# node_env N: the environment every process of node N (server and CLI) runs
# with, one NAME=value a line (for env(1) through mapfile).
node_env() {
  local d; d="$(node_dir "$1")"
  printf '%s\n' \
    "HOME=$BASE" \
    "RABBITMQ_NODENAME=$(node_name "$1")" \
    "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1" \
    "RABBITMQ_NODE_PORT=$(node_port "$1")" \
    "RABBITMQ_DIST_PORT=$(dist_port "$1")" \
    "RABBITMQ_MNESIA_BASE=$d/mnesia" \
    "RABBITMQ_LOG_BASE=$d/log" \
    "RABBITMQ_PID_FILE=$(pid_file "$1")" \
    "RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/enabled_plugins" \
    "RABBITMQ_CONFIG_FILE=$BASE/rabbitmq.conf" \
    "RABBITMQ_ADVANCED_CONFIG_FILE=$BASE/advanced.config" \
    "RABBITMQ_CONF_ENV_FILE=$BASE/rabbitmq-env.conf" \
    "ERL_EPMD_ADDRESS=127.0.0.1" \
    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}"
}

# ctl N ARGS...: rabbitmqctl against node N only.
ctl() {
  local n="$1" envs; shift
  mapfile -t envs < <(node_env "$n")
  env "${envs[@]}" "$SBIN/rabbitmqctl" -q -n "$(node_name "$n")" "$@"
}

prepare_base() {
  mkdir -p "$BASE"
  : >"$BASE/enabled_plugins.tmp" && printf '[].\n' >"$BASE/enabled_plugins.tmp" && mv "$BASE/enabled_plugins.tmp" "$BASE/enabled_plugins"
  [ -f "$BASE/rabbitmq.conf" ] || cat >"$BASE/rabbitmq.conf" <<'EOF'
# Test cluster nodes: listeners come from RABBITMQ_NODE_IP_ADDRESS/PORT.
log.console = false
log.file.level = info
EOF
  [ -f "$BASE/rabbitmq-env.conf" ] || echo '# intentionally empty: keeps /etc/rabbitmq/rabbitmq-env.conf away' >"$BASE/rabbitmq-env.conf"
  if [ ! -f "$BASE/.erlang.cookie" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$BASE/.erlang.cookie")
  fi
  chmod 400 "$BASE/.erlang.cookie"
}

# beam_pid N: the pid of node N's Erlang VM, empty when it is not running.
# The pid comes from our pid file and counts only if that process's
# environment names our node (guards against a stale file and pid reuse).
beam_pid() {
  local f pid; f="$(pid_file "$1")"
  [ -s "$f" ] || return 0
  pid="$(tr -dc '0-9' <"$f")"
  [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 0
  if { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$(node_name "$1")"; then
    echo "$pid"
  fi
}

# amqp_up N: node N completes the first step of an AMQP handshake (it sends
# connection.start in answer to the protocol header).
amqp_up() {
  local port; port="$(node_port "$1")"
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'AMQP\x00\x00\x09\x01' >&3 && head -c 1 <&3 | od -An -tx1 | grep -q 01" 2>/dev/null
}

# running_nodes N: the running cluster members as node N sees them, one a line.
running_nodes() {
  ctl "$1" eval 'lists:foreach(fun(N) -> io:format("~s~n", [N]) end, rabbit_nodes:all_running()).' 2>/dev/null | grep '@' || true
}

running_count() { running_nodes "$1" | grep -c "^${PREFIX}[1-9]@" || true; }

wait_until() { # wait_until SECONDS DESCRIPTION COMMAND...
  local limit="$1" what="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "timed out after ${limit}s waiting for $what"
    fi
    sleep 0.5
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# launch N: start node N's server in the background, detached from this shell.
launch() {
  local n="$1" d; d="$(node_dir "$n")"
  mkdir -p "$d/mnesia" "$d/log"
  # A node killed a moment ago may hold its ports until the kernel has
  # finished tearing it down: give that a few seconds.
  local p
  for p in "$(node_port "$n")" "$(dist_port "$n")"; do
    if ! port_free "$p"; then
      local deadline=$((SECONDS + 15))
      until port_free "$p"; do
        [ "$SECONDS" -lt "$deadline" ] || die "port $p of node $n is taken by another process (set DE_RABBIT_CLUSTER_PORT)"
        sleep 0.2
      done
    fi
  done
  rm -f "$(pid_file "$n")"
  local envs; mapfile -t envs < <(node_env "$n")
  # fd 8 is our lock: the server must not inherit it.
  (cd "$d" && exec setsid env "${envs[@]}" "$SBIN/rabbitmq-server" >>"$d/server.out" 2>&1 </dev/null 8>&-) &
  disown || true
}

# booted N: node N's VM runs, its app is up and it answers AMQP.
booted() { [ -n "$(beam_pid "$1")" ] && amqp_up "$1"; }

wait_booted() {
  local n="$1"
  wait_until "$TIMEOUT" "node $n ($(node_name "$n")) to answer AMQP on 127.0.0.1:$(node_port "$n"); see $(node_dir "$n")/server.out and log/" booted "$n"
}

joined() { [ "$(running_count "$1")" = "$COUNT" ]; }

# clustered N: node N is a member of node 1's cluster (disc node).
member_of_1() {
  ctl "$1" eval 'io:format("~p~n", [rabbit_nodes:all()]).' 2>/dev/null | grep -q "$(node_name 1)"
}

join() {
  local n="$1"
  if member_of_1 "$n"; then return 0; fi
  say "joining node $n to $(node_name 1)"
  ctl "$n" stop_app >/dev/null
  ctl "$n" join_cluster "$(node_name 1)" >/dev/null
  ctl "$n" start_app >/dev/null
}

# lock: one mutating invocation at a time per base directory (flock(1) when
# the system has it).
lock() {
  mkdir -p "$BASE"
  command -v flock >/dev/null 2>&1 || return 0
  exec 8>"$BASE/.script.lock"
  if ! flock -n 8; then
    say "waiting for another rabbitmq-cluster.sh working on $BASE"
    flock -w "$TIMEOUT" 8 || die "another rabbitmq-cluster.sh held $BASE/.script.lock for ${TIMEOUT}s"
  fi
}

# app_stopped N: node N's VM runs but its app was stopped (stop_app).
app_stopped() {
  [ "$(ctl "$1" eval 'rabbit_boot_state:get().' 2>/dev/null)" = stopped ]
}

cmd_start() {
  prepare_base
  local t0=$SECONDS n any=0 fresh=0
  for n in "${NODES[@]}"; do [ -n "$(beam_pid "$n")" ] && any=1; done
  if [ "$any" = 0 ]; then
    fresh=1
    for n in "${NODES[@]}"; do
      rm -rf "$(node_dir "$n")/mnesia"
      mkdir -p "$(node_dir "$n")/log"
      : >"$(node_dir "$n")/server.out"
    done
  fi
  for n in "${NODES[@]}"; do
    if [ -z "$(beam_pid "$n")" ]; then
      say "starting node $n: $(node_name "$n") amqp 127.0.0.1:$(node_port "$n") dist $(dist_port "$n")"
      launch "$n"
    fi
  done
  for n in "${NODES[@]}"; do
    if [ -n "$(beam_pid "$n")" ] && ! amqp_up "$n" && app_stopped "$n"; then
      say "node $n: app was stopped; starting it"
      ctl "$n" start_app >/dev/null
    fi
  done
  for n in "${NODES[@]}"; do wait_booted "$n"; done
  if [ "$fresh" = 1 ]; then
    for n in "${NODES[@]:1}"; do join "$n"; done
  else
    for n in "${NODES[@]:1}"; do member_of_1 "$n" || join "$n"; done
  fi
  wait_until "$TIMEOUT" "the cluster to have $COUNT running nodes" joined 1
  for n in "${NODES[@]}"; do wait_booted "$n"; done
  say "cluster up in $((SECONDS - t0))s: $(addrs_line)"
}

addrs_line() { local n out=(); for n in "${NODES[@]}"; do out+=("127.0.0.1:$(node_port "$n")"); done; echo "${out[*]}"; }

# stop_node N: graceful stop, SIGKILL after the timeout. Idempotent.
stop_node() {
  local n="$1" pid; pid="$(beam_pid "$n")"
  if [ -z "$pid" ]; then say "node $n is not running"; return 0; fi
  say "stopping node $n (pid $pid)"
  if ! timeout "$TIMEOUT" "$SELF" ctl "$n" stop "$(pid_file "$n")" >/dev/null 2>&1; then
    pid="$(beam_pid "$n")"
    if [ -n "$pid" ]; then
      say "node $n did not stop in ${TIMEOUT}s; SIGKILL pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait_until 30 "node $n to exit" not_running "$n"
}

not_running() { [ -z "$(beam_pid "$1")" ]; }

pid_gone() { ! kill -0 "$1" 2>/dev/null || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

cmd_stop() {
  [ -d "$BASE" ] || { say "nothing to stop ($BASE does not exist)"; return 0; }
  local n pids=()
  # All nodes in parallel; quorum queues need no stop order.
  for n in "${NODES[@]}"; do stop_node "$n" & pids+=($!); done
  local rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done
  [ "$rc" = 0 ] && say "all nodes stopped" || die "some node did not stop"
}

# status: exit 0 when all nodes answer and are joined, 3 when no node
# process runs at all, 1 otherwise.
cmd_status() {
  local n pid ok=0 app down=0
  for n in "${NODES[@]}"; do
    pid="$(beam_pid "$n")"
    if [ -z "$pid" ]; then
      echo "node $n $(node_name "$n") 127.0.0.1:$(node_port "$n"): down"
      ok=1; down=$((down + 1)); continue
    fi
    if amqp_up "$n"; then app="amqp up"; else app="amqp down (app stopped or booting)"; ok=1; fi
    echo "node $n $(node_name "$n") 127.0.0.1:$(node_port "$n"): pid $pid, $app"
  done
  for n in "${NODES[@]}"; do
    if [ -n "$(beam_pid "$n")" ] && amqp_up "$n"; then
      echo "running members (seen from node $n): $(running_nodes "$n" | tr '\n' ' ')"
      [ "$(running_count "$n")" = "$COUNT" ] || ok=1
      return "$ok"
    fi
  done
  echo "no node answers"
  [ "$down" = "$COUNT" ] && return 3
  return 1
}

cmd_kill() {
  local n="$1" pid; pid="$(beam_pid "$n")"
  if [ -z "$pid" ]; then say "node $n is not running"; return 0; fi
  kill -KILL "$pid"
  # Gone means reaped, not just unreadable (a zombie still holds nothing,
  # but its teardown may still hold the listening sockets for a moment).
  wait_until 30 "node $n (pid $pid) to die" pid_gone "$pid"
  wait_until 15 "port $(node_port "$n") of killed node $n to close" port_free "$(node_port "$n")"
  say "node $n killed (pid $pid)"
}

cmd_restart() {
  local n="$1" t0=$SECONDS
  prepare_base
  stop_node "$n"
  launch "$n"
  wait_booted "$n"
  member_of_1 "$n" || [ "$n" = 1 ] || join "$n"
  wait_until "$TIMEOUT" "node $n to rejoin the cluster" joined "$n"
  say "node $n back in $((SECONDS - t0))s"
}

cmd_stop_app() {
  local n="$1"
  [ -n "$(beam_pid "$n")" ] || die "node $n is not running"
  ctl "$n" stop_app >/dev/null
  say "node $n: app stopped"
}

cmd_start_app() {
  local n="$1"
  [ -n "$(beam_pid "$n")" ] || die "node $n is not running (use restart $n)"
  ctl "$n" start_app >/dev/null
  wait_booted "$n"
  wait_until "$TIMEOUT" "node $n to rejoin the cluster" joined "$n"
  say "node $n: app started"
}

cmd="${1:-}"
case "$cmd" in
  start|stop|kill|restart|stop-app|start-app|clean) lock ;;
esac
case "$cmd" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  kill|restart|stop-app|start-app)
    check_n "${2:-}"
    case "$cmd" in
      kill) cmd_kill "$2" ;;
      restart) cmd_restart "$2" ;;
      stop-app) cmd_stop_app "$2" ;;
      start-app) cmd_start_app "$2" ;;
    esac ;;
  addrs) for n in "${NODES[@]}"; do echo "127.0.0.1:$(node_port "$n")"; done ;;
  nodes) for n in "${NODES[@]}"; do echo "$n $(node_name "$n") 127.0.0.1:$(node_port "$n")"; done ;;
  ctl) check_n "${2:-}"; n="$2"; shift 2; ctl "$n" "$@" ;;
  clean) cmd_stop; rm -rf "$BASE"; say "removed $BASE" ;;
  ""|-h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (start|stop|status|kill N|restart N|stop-app N|start-app N|addrs|nodes|ctl N ...|clean)" ;;
esac
