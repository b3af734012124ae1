"""Apache Kafka Connect in standalone mode, from the official jars on Maven Central: the SIEMs' own plumbing.

Splunk's and Elastic's Kafka connectors run on Kafka Connect; the SIEM path is tested with it as it is
shipped: ``connect-runtime`` and ``connect-json`` 4.4.0 (the broker's version) and the FileStream
connectors of ``connect-file`` 4.3.1 (4.4.0 is not served by Maven Central), resolved once into the
cache like the broker. ``connect-file`` 4.3.1 calls ``org.apache.kafka.common.utils.AppInfoParser``,
which Kafka 4.4.0 moved to ``...utils.internals``; on the worker's classpath it fails with
NoClassDefFoundError. It is therefore installed as Connect installs any third-party connector, as an
isolated plugin (``plugin.path``) with its own dependencies (``kafka-clients`` 4.3.1): the plugin class
loader asks the framework first, so only classes 4.4.0 lacks (that one) come from the plugin's jars. :class:`StandaloneConnect` writes a worker configuration that logs in as one
role over SASL_SSL (SCRAM-SHA-512, the stack's CA), starts ``ConnectStandalone`` with the given
connector configurations, and stops it. Its REST listener takes the port ``CONNECT_PORT_OFFSET`` above
the stack's Kafka client port (20612 for a stack at port base 20600; 19104 with the default ports).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.dev.kafka import LOG4J_VERSION, java_executable, resolve_jars
from pipeline.dev.processes import StackError, port_is_open, terminate

CONNECT_VERSION = "4.4.0"
CONNECT_FILE_VERSION = "4.3.1"
MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectStandalone"
CONNECT_PORT_OFFSET = 12

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.auditseal</groupId>
  <artifactId>connect-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId><version>{connect}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-json</artifactId><version>{connect}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_PLUGIN_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.auditseal</groupId>
  <artifactId>connect-file-plugin</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-file</artifactId><version>{file}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""


def ensure_connect_jars(cache: Path) -> tuple[Path, Path]:
    """Resolve Kafka Connect (runtime, JSON converter) and the FileStream plugin into the cache:
    (the worker's libs folder, the plugin path)."""
    pom = _POM.format(connect=CONNECT_VERSION, log4j=LOG4J_VERSION)
    libs = resolve_jars(cache, cache / "kafka-connect" / CONNECT_VERSION, pom, f"Kafka Connect {CONNECT_VERSION}",
                        f"connect-runtime-{CONNECT_VERSION}.jar")
    # plugin.path names a folder of plugin folders: here its one plugin folder is libs/
    plugins = cache / "kafka-connect" / f"connect-file-{CONNECT_FILE_VERSION}"
    resolve_jars(cache, plugins, _PLUGIN_POM.format(file=CONNECT_FILE_VERSION),
                 f"connect-file {CONNECT_FILE_VERSION}", f"connect-file-{CONNECT_FILE_VERSION}.jar")
    return libs, plugins


def _jaas(username: str, password: str) -> str:
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{username}" password="{escaped}";'


def worker_properties(*, bootstrap: str, username: str, password: str, ca_file: str, rest_port: int,
                      offsets_file: Path, plugin_path: Path) -> dict[str, str]:
    """A standalone worker that logs in (itself and its sink tasks' consumers) as ``username`` over SASL_SSL."""
    security = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": _jaas(username, password),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": ca_file,
        "ssl.endpoint.identification.algorithm": "https",
    }
    properties = {
        "bootstrap.servers": bootstrap,
        **security,
        **{f"consumer.{key}": value for key, value in security.items()},
        **{f"admin.{key}": value for key, value in security.items()},
        # a SIEM reads only committed transactions: the bridge's aborted attempts never reach it
        "consumer.isolation.level": "read_committed",
        "consumer.auto.offset.reset": "earliest",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "offset.storage.file.filename": str(offsets_file),
        "offset.flush.interval.ms": "1000",
        "listeners": f"http://127.0.0.1:{rest_port}",
        "plugin.path": str(plugin_path),
        # sink connectors name their consumer group: the siem role may use only auditseal-siem* groups
        "connector.client.config.override.policy": "All",
    }
    return properties


def write_properties(path: Path, properties: dict[str, str]) -> Path:
    """Write a Java properties file (values escaped as java.util.Properties reads them)."""
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n")

    path.write_text("".join(f"{key}={escape(str(value))}\n" for key, value in properties.items()))
    os.chmod(path, 0o600)  # it holds a password
    return path


@dataclass
class StandaloneConnect:
    """One ``ConnectStandalone`` process with its connectors, started and stopped by the caller."""

    libs: Path
    folder: Path
    worker: dict[str, str]
    connectors: list[dict[str, str]]
    process: subprocess.Popen | None = None

    @property
    def log_file(self) -> Path:
        """Where the worker logs."""
        return self.folder / "connect.log"

    def start(self, timeout: float = 120.0) -> None:
        """Start the worker and wait until its REST listener answers; StackError naming the log otherwise."""
        self.folder.mkdir(parents=True, exist_ok=True)
        worker = write_properties(self.folder / "worker.properties", self.worker)
        connectors = [write_properties(self.folder / f"connector-{n}.properties", c)
                      for n, c in enumerate(self.connectors)]
        log4j = self.folder / "log4j2.properties"
        log4j.write_text(_LOG4J2.format(log=self.log_file))
        argv = [java_executable(), "-Xms256m", "-Xmx512m", f"-Dlog4j2.configurationFile={log4j}",
                "-cp", f"{self.libs}/*", MAIN_CLASS, str(worker), *map(str, connectors)]
        output = open(self.folder / "connect.stdout", "wb")
        self.process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        port = int(self.worker["listeners"].rsplit(":", 1)[1])
        deadline = time.monotonic() + timeout
        while not port_is_open("127.0.0.1", port):
            if self.process.poll() is not None:
                raise StackError(f"Kafka Connect exited with {self.process.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"Kafka Connect did not listen on {port} within {timeout:.0f} s; see {self.log_file}")
            time.sleep(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker (SIGTERM, then SIGKILL after ``timeout``); only the process this object started."""
        process, self.process = self.process, None
        if process is not None:
            terminate(process, timeout)
