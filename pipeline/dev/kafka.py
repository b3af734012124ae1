"""Apache Kafka 4.x in KRaft mode, from the official jars on Maven Central, secured with TLS, SCRAM and ACLs.

Three listeners, all on loopback and all TLS:
- ``CLIENT`` (SASL_SSL, SCRAM-SHA-512): every user and service.
- ``INTERNAL`` (SSL, client certificate required): the broker talking to itself.
- ``CONTROLLER`` (SSL, client certificate required): KRaft quorum traffic.
Principals come from :data:`PRINCIPAL_BUILDER` (``pipeline/dev/java``, compiled once into the cache): a
certificate yields ``Cert:<CN>``, a SCRAM login ``User:<name>``. The super users are certificate principals
only (the builder refuses to start the broker otherwise): the broker (``Cert:broker``) and the setup identity
``Cert:bootstrap``, which ``auditseal dev up`` uses over the internal mutual-TLS listener to create users,
ACLs and topics. No SCRAM credential, whatever its name, can produce either.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.dev.processes import ManagedProcess, StackError, run_checked, run_with_progress

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.26.1"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
BROKER_NAME = "broker"
BOOTSTRAP_USER = "bootstrap"
CERTIFICATE_TYPE = "Cert"
BROKER_PRINCIPAL = f"{CERTIFICATE_TYPE}:{BROKER_NAME}"
BOOTSTRAP_PRINCIPAL = f"{CERTIFICATE_TYPE}:{BOOTSTRAP_USER}"
SUPER_USERS = (BROKER_PRINCIPAL, BOOTSTRAP_PRINCIPAL)
PRINCIPAL_BUILDER = "dev.auditseal.kafka.CertificatePrincipalBuilder"
_PRINCIPAL_BUILDER_SOURCE = Path(__file__).parent / "java" / "dev" / "auditseal" / "kafka" / "CertificatePrincipalBuilder.java"
MIN_JAVA = 17
# Kafka writes a metadata snapshot at least this often while there are new records. Without a snapshot
# a restarted broker replays the metadata log, and Kafka 3.5-4.4's ScramDelta.apply() can then lose every
# SCRAM user (see README, "SCRAM users lost on a restart"); a snapshot taken before the restart avoids the
# replay of a user's deletion. Kafka's default is an hour.
SNAPSHOT_INTERVAL_MS = 10_000
_DOWNLOADED = re.compile(r"Downloaded from \S+: \S+/([^/\s]+\.jar)\b")

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.auditseal</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

# AUDITSEAL_MAVEN_REPO points every download at one repository (a corporate mirror, say)
_MIRROR_SETTINGS = """<settings><mirrors><mirror><id>auditseal-mirror</id><mirrorOf>*</mirrorOf>
<url>{url}</url></mirror></mirrors></settings>
"""

_LOG4J2 = """status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_dir}/server.log
appender.file.filePattern = {log_dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 5
appender.authorizer.type = RollingFile
appender.authorizer.name = authorizer
appender.authorizer.fileName = {log_dir}/kafka-authorizer.log
appender.authorizer.filePattern = {log_dir}/kafka-authorizer.log.%i
appender.authorizer.layout.type = PatternLayout
appender.authorizer.layout.pattern = [%d{{yyyy-MM-dd'T'HH:mm:ss.SSSXXX}}] %p %m (%c)%n
appender.authorizer.policies.type = Policies
appender.authorizer.policies.size.type = SizeBasedTriggeringPolicy
appender.authorizer.policies.size.size = 50MB
appender.authorizer.strategy.type = DefaultRolloverStrategy
appender.authorizer.strategy.max = 10
appender.authentication.type = RollingFile
appender.authentication.name = authentication
appender.authentication.fileName = {log_dir}/kafka-authentication.log
appender.authentication.filePattern = {log_dir}/kafka-authentication.log.%i
appender.authentication.layout.type = PatternLayout
appender.authentication.layout.pattern = [%d{{yyyy-MM-dd'T'HH:mm:ss.SSSXXX}}] %p %m (%c)%n
appender.authentication.policies.type = Policies
appender.authentication.policies.size.type = SizeBasedTriggeringPolicy
appender.authentication.policies.size.size = 50MB
appender.authentication.strategy.type = DefaultRolloverStrategy
appender.authentication.strategy.max = 10
appender.authentication.filter.threshold.type = ThresholdFilter
appender.authentication.filter.threshold.level = INFO
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
# failed authentications ("Failed authentication with /address ...") in a file of their own, for the access auditor
logger.authentication.name = org.apache.kafka.common.network.Selector
logger.authentication.level = INFO
logger.authentication.appenderRef.authentication.ref = authentication
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = DEBUG
logger.authorizer.additivity = false
logger.authorizer.appenderRef.authorizer.ref = authorizer
"""


@dataclass(frozen=True)
class KafkaPorts:
    """The three loopback ports of the single combined broker/controller."""

    client: int
    internal: int
    controller: int


def java_executable() -> str:
    """The ``java`` to run Kafka with (``$JAVA_HOME/bin/java`` first), checked to be Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise StackError(
            f"Java {MIN_JAVA}+ is needed to run Kafka but no `java` was found "
            "(install a JDK, e.g. `apt-get install openjdk-17-jre-headless`, or set JAVA_HOME)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+; {java} is: {out.strip()[:120]}")
    return java


def ensure_jars(cache: Path, log: Callable[[str], object] = print) -> Path:
    """Resolve Kafka and a log4j2 backend from Maven Central into the cache; return the libs folder."""
    pom = _POM.format(scala=SCALA_VERSION, kafka=KAFKA_VERSION, log4j=LOG4J_VERSION)
    return resolve_jars(cache, cache / "kafka" / KAFKA_VERSION, pom, f"Kafka {KAFKA_VERSION}",
                        f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar", log=log)


def resolve_jars(cache: Path, work: Path, pom_text: str, what: str, expected_jar: str,
                 log: Callable[[str], object] = print) -> Path:
    """Resolve the runtime dependencies of ``pom_text`` into ``work/libs`` once; return that folder.

    Maven does the resolution (it verifies checksums and follows the official POMs' dependencies),
    into a repository inside our cache (``cache/m2``) so nothing lands in ``~/.m2``. ``log`` shows how
    far it is (jars downloaded so far, the latest one's name) while it runs, once per cache.
    """
    libs = work / "libs"
    done = libs / ".complete"
    if done.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"Apache Maven (`mvn`) is needed once to fetch {what} from Maven Central; install it")
    work.mkdir(parents=True, exist_ok=True)
    pom = work / "pom.xml"
    pom.write_text(pom_text)
    staging = work / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    # not -q: Maven's "Downloaded from" lines are the progress shown (Maven's own plugins count too)
    argv = [mvn, "-B", f"-Dmaven.repo.local={cache / 'm2'}", "-f", str(pom)]
    mirror = os.environ.get("AUDITSEAL_MAVEN_REPO")
    if mirror:
        settings = work / "settings.xml"
        settings.write_text(_MIRROR_SETTINGS.format(url=mirror))
        argv += ["-s", str(settings)]
    downloaded: list[str] = []

    def progress(line: str) -> str | None:
        match = _DOWNLOADED.search(line)
        if match is None:
            return None
        downloaded.append(match.group(1))
        return f"{len(downloaded)} jars ({match.group(1)})"

    run_with_progress(
        argv + ["dependency:copy-dependencies", f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        f"downloading {what} from {mirror or 'Maven Central'} (once)",
        log=log, progress=progress, timeout=1800,
    )
    if not (staging / expected_jar).exists():
        raise StackError(f"downloading {what}: Maven finished but {expected_jar} is missing")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    done.write_text(what + "\n")
    return libs


def ensure_principal_builder(cache: Path, libs: Path) -> Path:
    """Compile the certificate principal builder against the Kafka jars once (keyed by its source's
    SHA-256); return the classes folder to put on the broker's class path."""
    source = _PRINCIPAL_BUILDER_SOURCE.read_bytes()
    classes = cache / "kafka-principal" / hashlib.sha256(source + KAFKA_VERSION.encode()).hexdigest()[:16]
    done = classes / ".complete"
    if done.exists():
        return classes
    javac = shutil.which("javac", path=str(Path(java_executable()).parent)) or shutil.which("javac")
    if javac is None:
        raise StackError("a JDK's `javac` is needed once to compile the broker's principal builder; install a JDK")
    shutil.rmtree(classes, ignore_errors=True)
    classes.mkdir(parents=True)
    run_checked([javac, "--release", str(MIN_JAVA), "-cp", f"{libs}/*", "-d", str(classes), str(_PRINCIPAL_BUILDER_SOURCE)],
                "compiling the broker's certificate principal builder")
    done.write_text(KAFKA_VERSION + "\n")
    return classes


def server_properties(*, data_dir: Path, pki_dir: Path, ports: KafkaPorts, node_id: int = 1,
                      quorum: dict[int, int] | None = None, replicas: int = 1) -> str:
    """The broker configuration: KRaft combined mode, TLS everywhere, SCRAM, StandardAuthorizer, deny by default.

    ``quorum`` maps each node id of a cluster to its controller port (default: this node alone);
    ``replicas`` is the replication factor of internal topics (and min ISR 2 from 3 replicas on)."""
    keystore = pki_dir / "broker.keystore.pem"
    ca = pki_dir / "ca.pem"
    voters = quorum or {node_id: ports.controller}
    min_isr = 2 if replicas >= 3 else 1
    lines = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": ",".join(f"{n}@127.0.0.1:{port}" for n, port in sorted(voters.items())),
        "listeners": (
            f"CLIENT://127.0.0.1:{ports.client},INTERNAL://127.0.0.1:{ports.internal},"
            f"CONTROLLER://127.0.0.1:{ports.controller}"
        ),
        "advertised.listeners": f"CLIENT://localhost:{ports.client},INTERNAL://localhost:{ports.internal}",
        "listener.security.protocol.map": "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "INTERNAL",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.client.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.internal.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "listener.name.client.ssl.client.auth": "none",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": keystore,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": ca,
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "ssl.principal.mapping.rules": r"RULE:^CN=([^,]+),O=.*$/$1/,DEFAULT",
        # certificates -> Cert:<CN>, SCRAM -> User:<name>: a password can never make a super user
        "principal.builder.class": PRINCIPAL_BUILDER,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(SUPER_USERS),
        "log.dirs": data_dir,
        "num.partitions": 1,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": 6,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 6,
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "group.initial.rebalance.delay.ms": 0,
        "log.flush.interval.messages": 9223372036854775807,
        "unclean.leader.election.enable": "false",
        "metadata.log.max.snapshot.interval.ms": SNAPSHOT_INTERVAL_MS,
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def format_storage(java: str, libs: Path, properties: Path, log: Path, principal_builder: Path,
                   cluster_id: str | None = None) -> None:
    """Format KRaft storage once (every node of a cluster with the same ``cluster_id``). No SCRAM user is
    created: the setup identity is a certificate."""
    run_checked(
        [java, f"-Dlog4j2.configurationFile={log}", "-cp", f"{libs}/*:{principal_builder}", STORAGE_TOOL, "format",
         f"--cluster-id={cluster_id or _cluster_id()}", "-c", str(properties)],
        "formatting Kafka storage",
    )


def _cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def start_broker(process: ManagedProcess, java: str, libs: Path, properties: Path, log4j: Path, principal_builder: Path,
                 heap: str = "1g") -> int:
    """Start the broker detached (``principal_builder``: :func:`ensure_principal_builder`'s folder);
    ``process.marker`` must appear in its command line."""
    argv = [
        java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}", f"-Dauditseal.stack={process.marker}",
        "-cp", f"{libs}/*:{principal_builder}", MAIN_CLASS, str(properties),
    ]
    return process.start(argv)


def log4j_properties(log_dir: Path) -> str:
    """log4j2 configuration: broker log, the authorizer decision log and the failed-authentication log, rotated
    by size; the latter two's timestamps carry their UTC offset, since the access auditor turns them into events."""
    return _LOG4J2.format(log_dir=log_dir)
