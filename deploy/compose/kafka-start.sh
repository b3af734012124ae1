#!/bin/bash
# The compose stack's broker (the auditseal/kafka image: apache/kafka plus the certificate principal builder,
# deploy/compose/kafka.Dockerfile), as `auditseal dev up` runs it: format KRaft storage once, with no SCRAM user
# at all (the setup identity is the `bootstrap` client certificate, on the INTERNAL mutual-TLS listener), then
# run Kafka with the configuration the init job wrote (deploy/compose/provision.py).
set -euo pipefail
home=/var/lib/auditseal-kafka
export LOG_DIR="$home/logs"
export KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$home/log4j2.properties"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms1g -Xmx1g}"
# kafka-run-class.sh appends the Kafka jars to CLASSPATH: the principal builder server.properties names
export CLASSPATH=/opt/auditseal-principal
if [ ! -f "$home/data/meta.properties" ]; then
  /opt/kafka/bin/kafka-storage.sh format --cluster-id "$(cat "$home/cluster-id")" -c "$home/server.properties"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$home/server.properties"
