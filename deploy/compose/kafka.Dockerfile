# syntax=docker/dockerfile:1.7
# The compose stack's broker: the official apache/kafka image plus the certificate principal builder of
# `auditseal dev up` (pipeline/dev/java), compiled against the image's own Kafka jars. With it a TLS client
# certificate yields Cert:<CN> and a SCRAM login User:<name>, and the super users are certificate principals
# only (the builder refuses to start the broker with a User: super user): no SCRAM credential, whatever its
# name, can become one. kafka-start.sh puts /opt/auditseal-principal on the class path.
ARG KAFKA_IMAGE=apache/kafka:4.4.0
FROM ${KAFKA_IMAGE} AS kafka

FROM eclipse-temurin:17-jdk AS build
COPY --from=kafka /opt/kafka/libs /opt/kafka/libs
COPY pipeline/dev/java /src
RUN javac --release 17 -cp "/opt/kafka/libs/*" -d /classes /src/dev/auditseal/kafka/CertificatePrincipalBuilder.java

FROM ${KAFKA_IMAGE}
COPY --from=build /classes /opt/auditseal-principal
