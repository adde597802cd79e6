#!/usr/bin/env bash
# A Spark Connect server on loopback for dpgate's Spark backend, from the
# pyspark package (its jars and sbin scripts; Java 17 must be installed).
#
#   scripts/spark-connect.sh start            local mode, 2 threads
#   scripts/spark-connect.sh start-cluster    a standalone master, two
#                                             workers, and the Connect
#                                             server attached to them
#   scripts/spark-connect.sh stop             stops whatever it started
#
# Environment: DPGATE_SPARK_VENV (default target/spark-venv, created with
# pyspark if missing), DPGATE_SPARK_DIR (logs, PIDs, warehouse; default
# target/spark-run), DPGATE_SPARK_PORT (default 15002). For the cluster:
# DPGATE_SPARK_MASTER_PORT (default 7077), DPGATE_SPARK_WEBUI_PORT (the
# master's web UI, default 8080; the workers' are the next two) and
# DPGATE_SPARK_UI_PORT (the Connect driver's UI and REST API, whose
# /api/v1/applications/<id>/executors shows each executor's tasks;
# default 4040). Prints the server's URL (sc://127.0.0.1:PORT) once it
# answers.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${DPGATE_SPARK_VENV:-target/spark-venv}
run=${DPGATE_SPARK_DIR:-target/spark-run}
port=${DPGATE_SPARK_PORT:-15002}
master_port=${DPGATE_SPARK_MASTER_PORT:-7077}
webui_port=${DPGATE_SPARK_WEBUI_PORT:-8080}
ui_port=${DPGATE_SPARK_UI_PORT:-4040}
pyspark_version=4.3.0

ensure_pyspark() {
  if ! "$venv/bin/python" -c 'import pyspark' >/dev/null 2>&1; then
    echo "installing pyspark $pyspark_version into $venv (about 450 MB)" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "pyspark==$pyspark_version" >&2
  fi
  SPARK_HOME=$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  export SPARK_HOME
  # The server keeps its catalog in memory: tables it made are forgotten
  # when it stops, and their leftover files would block making them again.
  rm -rf "$run/warehouse"
  mkdir -p "$run/logs" "$run/pid" "$run/warehouse"
  run=$(cd "$run" && pwd)
  export SPARK_LOG_DIR="$run/logs" SPARK_PID_DIR="$run/pid" SPARK_NO_DAEMONIZE=1
  export SPARK_LOCAL_IP=127.0.0.1 SPARK_MASTER_HOST=127.0.0.1
}

# Starts `$@` detached, its PID in $run/pid/$name.pid.
spawn() {
  local name=$1
  shift
  setsid nohup "$@" >"$run/logs/$name.out" 2>&1 </dev/null &
  echo $! >"$run/pid/$name.pid"
}

wait_port() {
  local port=$1 what=$2 log=$3
  for _ in $(seq 1 240); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  echo "$what did not listen on 127.0.0.1:$port within 120 s; its log:" >&2
  tail -40 "$log" >&2
  exit 1
}

# Starts the Connect server on `$1` with any further `--conf`s.
start_connect() {
  local master=$1
  shift
  spawn connect "$SPARK_HOME/sbin/start-connect-server.sh" \
    --master "$master" --driver-memory 1g "$@" \
    --conf spark.connect.grpc.binding.address=127.0.0.1 \
    --conf spark.connect.grpc.binding.port="$port" \
    --conf spark.sql.warehouse.dir="$run/warehouse" \
    --conf spark.driver.host=127.0.0.1 \
    --conf spark.sql.shuffle.partitions=4
  # Wait for the server's own word, not just an open port: the driver's
  # services bind random ports while it starts and may take the one asked
  # for (the port then answers, but not in gRPC: "h2 protocol error");
  # Spark then moves the Connect server to a port beside it, which the
  # log names.
  local log="$run/logs/connect.out" started=
  for _ in $(seq 1 240); do
    started=$(sed -n 's/.*Spark Connect server started at: 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log" 2>/dev/null | tail -1)
    [ -n "$started" ] && break
    grep -q "Error starting Spark Connect server" "$log" 2>/dev/null && break
    sleep 0.5
  done
  if [ -z "$started" ]; then
    echo "the Spark Connect server did not start on 127.0.0.1:$port (within 120 s); its log:" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  echo "sc://127.0.0.1:$started"
}

stop_all() {
  for pidfile in "$run"/pid/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # Each was started in its own session: stop the whole group (the
    # launcher script and its JVM).
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  start)
    ensure_pyspark
    start_connect 'local[2]' --conf spark.ui.enabled=false
    ;;
  start-cluster)
    ensure_pyspark
    spawn master "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host 127.0.0.1 --port "$master_port" --webui-port "$webui_port"
    wait_port "$master_port" "the Spark master" "$run/logs/master.out"
    for i in 1 2; do
      spawn "worker$i" "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
        --host 127.0.0.1 --cores 1 --memory 1g --webui-port $((webui_port + i)) \
        --work-dir "$run/work$i" "spark://127.0.0.1:$master_port"
    done
    # One single-core executor on each worker.
    start_connect "spark://127.0.0.1:$master_port" \
      --conf spark.executor.cores=1 --conf spark.executor.memory=512m \
      --conf spark.cores.max=2 \
      --conf spark.ui.enabled=true --conf spark.ui.port="$ui_port"
    ;;
  stop)
    mkdir -p "$run/pid"
    stop_all
    ;;
  *)
    echo "usage: $0 start | start-cluster | stop" >&2
    exit 2
    ;;
esac
