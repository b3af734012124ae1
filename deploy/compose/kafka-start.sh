#!/bin/bash
# The compose stack's broker (apache/kafka image, as appuser): format KRaft storage once, creating the SCRAM
# super user `bootstrap` that the setup job provisions with (as `auditseal dev up` does), then run Kafka
# with the configuration the init job wrote (deploy/compose/provision.py).
set -euo pipefail
home=/var/lib/auditseal-kafka
export LOG_DIR="$home/logs"
export KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$home/log4j2.properties"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms1g -Xmx1g}"
if [ ! -f "$home/data/meta.properties" ]; then
  /opt/kafka/bin/kafka-storage.sh format --cluster-id "$(cat "$home/cluster-id")" -c "$home/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=bootstrap,password=$(cat "$home/bootstrap-password")]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$home/server.properties"
