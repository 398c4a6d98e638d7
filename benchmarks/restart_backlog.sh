#!/usr/bin/env bash
# Restart time with a backlog of persistent messages, amqpd vs the RabbitMQ oracle.
#
#   benchmarks/restart_backlog.sh [N] [SIZE]      (default 1000000 messages of 1024 B)
#
# For each broker: publish N persistent messages with confirms to a durable queue that has
# no consumer (amqp-perf --consumers 0 --keep, so the client is not the bottleneck), stop
# the broker gracefully, start it again and time from the start command until a passive
# queue.declare reports all N messages. Prints peak RSS of amqpd while holding the backlog.
# Needs ../shared/bench/build.sh to have run and the oracle installed (rabbitmq-oracle).
set -euo pipefail
N=${1:-1000000}
SIZE=${2:-1024}
here=$(cd "$(dirname "$0")" && pwd)
shared=$(cd "$here/../../shared" && pwd)
PERF=${AMQP_PERF:-$HOME/.cache/amqp-perf/amqp-perf}
PY=${PYTHON:-python3}
PORT=${AMQPD_PORT:-5673}
DATA=$(mktemp -d /tmp/amqpd-restart.XXXXXX)
Q=restart-backlog

count() { # url -> message count of $Q (passive declare), or -1
  "$PY" - "$1" <<'PY'
import sys, pika
try:
    c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
    print(c.channel().queue_declare("restart-backlog", passive=True).method.message_count)
    c.close()
except Exception:
    print(-1)
PY
}
wait_count() { # url -> seconds until count == N
  local start=$SECONDS0 url=$1
  while [ "$(count "$url")" != "$N" ]; do :; done
  echo "$(( $(date +%s%N) / 1000000 - start ))"
}

publish() { # url
  "$PERF" --uri "$1" --producers 1 --consumers 0 --persistent --confirm 256 \
    --count "$N" --size "$SIZE" --queue "$Q" --keep --no-purge --time 3600 | grep RESULT \
    | tr ' ' '\n' | grep -E '^(sent|confirmed|publish_rate)='
}

echo "== amqpd (data dir $DATA, port $PORT)"
"$PY" -m amqpd --listen 127.0.0.1:$PORT --data-dir "$DATA" >"$DATA.log" 2>&1 &
pid=$!
until grep -q "listening on" "$DATA.log"; do sleep 0.2; done
URL=amqp://guest:guest@127.0.0.1:$PORT/%2F
publish "$URL"
echo "amqpd RSS with backlog: $(awk '/VmHWM/ {print $2 " kB peak"}' /proc/$pid/status)"
kill -TERM $pid; wait $pid || true
SECONDS0=$(( $(date +%s%N) / 1000000 ))
"$PY" -m amqpd --listen 127.0.0.1:$PORT --data-dir "$DATA" >"$DATA.log2" 2>&1 &
pid=$!
echo "amqpd restart until $N messages are back: $(wait_count "$URL") ms"
grep "recovered data directory" "$DATA.log2" | head -1
echo "amqpd RSS after recovery: $(awk '/VmRSS/ {print $2 " kB"}' /proc/$pid/status)"
kill -TERM $pid; wait $pid || true
rm -rf "$DATA" "$DATA.log" "$DATA.log2"

echo "== RabbitMQ oracle (a node of its own, so the shared oracle on 5682 is never stopped)"
export ORACLE_PORT=${RESTART_ORACLE_PORT:-5692}
export ORACLE_HOME=${RESTART_ORACLE_HOME:-/tmp/rabbitmq-oracle-restart}
ORACLE=$("$shared/tools/rabbitmq-oracle" start)
"$PY" - "$ORACLE" <<'PY'
import sys, pika
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
c.channel().queue_delete("restart-backlog")
c.close()
PY
publish "$ORACLE"
"$shared/tools/rabbitmq-oracle" stop
SECONDS0=$(( $(date +%s%N) / 1000000 ))
"$shared/tools/rabbitmq-oracle" start >/dev/null
echo "rabbitmq restart until $N messages are back: $(wait_count "$ORACLE") ms"
"$PY" - "$ORACLE" <<'PY'
import sys, pika
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
c.channel().queue_delete("restart-backlog")
c.close()
PY
"$shared/tools/rabbitmq-oracle" stop
