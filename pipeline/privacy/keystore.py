"""The key store: data subjects' keys, wrapped with the KEK, in the compacted Kafka topic ``audit.keys``.

An adapter at the edge: everything cryptographic is in :mod:`pipeline.privacy.crypto`, the record
formats in :mod:`pipeline.privacy.records`. A :class:`KeyStore` reads the whole topic when it opens
(a table of wrapped keys, ~130 bytes per subject in memory), then keeps following it on a background
thread, so a key another producer created, or an erasure, reaches every running client within about
a second. Unwrapped keys live only in a cache bounded in size and in time (``cache_size``,
``cache_ttl``) and are dropped at once when the client sees their subject erased.

Who may use it (``config/roles.yaml``): the ``privacy`` role reads and writes it (producers that
protect personal data create keys with it; ``auditseal erase`` destroys them); the ``investigator``
reads it (``auditseal reveal``). Nobody else, and never the WORM archive: a key must be destroyable.

If the store cannot be reached, a key that is not cached cannot be created or read: the call raises
:class:`KeyStoreUnavailableError` and the event is refused (never sent in plaintext).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from cachetools import TTLCache
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.archive.encryption import KeyEncryptionKey
from pipeline.config import KafkaSettings
from pipeline.privacy.crypto import (
    PSEUDONYM_KEY_BYTES,
    FieldCipher,
    PrivacyError,
    PseudonymKey,
    SubjectKey,
    WrongKekError,
    new_subject_key,
)
from pipeline.privacy.records import (
    ERASED_PREFIX,
    PSEUDONYM_KEY_PREFIX,
    ROLL_KEY,
    SUBJECT_PREFIX,
    Erasure,
    KeyStoreRecordError,
    WrappedKey,
    erased_name,
    pseudonym_key_name,
    subject_key_name,
)
from pipeline.wire.topics import KEYS_TOPIC

# How long a tombstone stays readable after compaction: a client offline longer than this finds the key
# record already gone, so it can never miss an erasure; also the bound on restoring an older backup.
DELETE_RETENTION_MS = 24 * 60 * 60 * 1000
# A segment rolls at the first append this long after it opened: `erase` appends after waiting this
# long, so the destroyed key's segment becomes cleanable, and the cleaner (every log.cleaner.backoff.ms,
# 15 s) rewrites it without the key.
SEGMENT_MS = 10_000
# The cleaned-away segment file is unlinked this long after the cleaner swaps in its rewrite (Kafka's
# default is 60 s); `erase` waits this long (and a margin) after it sees the records gone.
FILE_DELETE_DELAY_MS = 1000
KEYS_TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "segment.ms": str(SEGMENT_MS),
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    # every record is compacted within a day, even when nobody erases (nothing stays dirty for ever)
    "max.compaction.lag.ms": str(DELETE_RETENTION_MS),
    "delete.retention.ms": str(DELETE_RETENTION_MS),
    "file.delete.delay.ms": str(FILE_DELETE_DELAY_MS),
    "min.insync.replicas": "1",
    "unclean.leader.election.enable": "false",
}
KEYS_TOPIC_PARTITIONS = 1
KEYSTORE_USERNAME_VARIABLE = "AUDITSEAL_KEYSTORE_USERNAME"
KEYSTORE_PASSWORD_VARIABLE = "AUDITSEAL_KEYSTORE_PASSWORD"
KEK_FILE_VARIABLE = "AUDITSEAL_KEK_FILE"
KEK_VARIABLE = "AUDITSEAL_KEK"

_log = logging.getLogger(__name__)


class KeyStoreUnavailableError(PrivacyError):
    """The key store topic did not answer in time; nothing was encrypted, created or destroyed."""


class SubjectErasedError(PrivacyError):
    """The subject's key was destroyed by ``auditseal erase``; its fields can never be read again."""

    def __init__(self, erasure: Erasure, message: str) -> None:
        self.erasure = erasure
        super().__init__(message)


class UnknownSubjectError(PrivacyError):
    """The key store holds no key (and no erasure) for this subject."""


class PseudonymKeyMissingError(PrivacyError):
    """The key store holds no pseudonym key; ``auditseal dev up`` (or ``KeyStore.ensure_pseudonym_key``) creates it."""


def keystore_settings(env: Mapping[str, str]) -> KafkaSettings:
    """The key store's connection: ``AUDITSEAL_KEYSTORE_USERNAME``/``_PASSWORD`` if set (a producer's second
    identity, the ``privacy`` role), otherwise the command's own ``AUDITSEAL_SASL_*`` principal."""
    settings = KafkaSettings.from_env(env)
    username = env.get(KEYSTORE_USERNAME_VARIABLE)
    if username:
        settings = KafkaSettings(settings.bootstrap, username, env.get(KEYSTORE_PASSWORD_VARIABLE, ""),
                                 settings.ca_file)
    return settings


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KeyStore:
    """Subject keys and pseudonym keys in ``audit.keys``, unwrapped with ``kek``; see the module doc."""

    def __init__(self, settings: KafkaSettings, kek: KeyEncryptionKey, *, topic: str = KEYS_TOPIC,
                 cache_size: int = 10_000, cache_ttl: float = 600.0, timeout: float = 15.0) -> None:
        """No I/O here; :meth:`open` reads the topic."""
        self.settings = settings
        self.kek = kek
        self.topic = topic
        self.timeout = timeout
        self._lock = threading.RLock()
        self._keys: dict[str, dict[str, WrappedKey]] = {}
        self._pseudonym_keys: dict[int, WrappedKey] = {}
        self._erasures: dict[str, Erasure] = {}
        self._ciphers: TTLCache = TTLCache(maxsize=cache_size, ttl=cache_ttl)
        self._erasure_listeners: list[Callable[[str], None]] = []
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._follower: threading.Thread | None = None
        self._closing = threading.Event()
        self._follow_error: str | None = None
        self._fatal: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> KeyStore:
        """Read the whole topic (KeyStoreUnavailableError if it does not answer within ``timeout``),
        then follow it on a background thread."""
        config = self.settings.client_config(**{
            "group.id": "auditseal-keystore-view",  # never joined nor committed: partitions are assigned
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "client.id": "auditseal-keystore",
        })
        self._consumer = Consumer(config)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                metadata = self._consumer.list_topics(self.topic, timeout=max(0.1, deadline - time.monotonic()))
            except KafkaException as exc:
                self._consumer.close()
                raise KeyStoreUnavailableError(
                    f"key store {self.topic} at {self.settings.bootstrap} did not answer within {self.timeout}s "
                    f"({exc.args[0].str()})") from None
            topic = metadata.topics.get(self.topic)
            # a topic created a moment ago is briefly unknown to the broker's metadata cache
            unknown = topic is not None and topic.error is not None \
                and topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if topic is None or topic.error is not None:
            self._consumer.close()
            reason = topic.error.str() if topic is not None and topic.error is not None else "no such topic"
            raise KeyStoreUnavailableError(f"key store {self.topic} at {self.settings.bootstrap}: {reason} "
                                           f"(as {self.settings.username})")
        partitions = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(topic.partitions)]
        ends = {}
        for tp in partitions:
            while True:
                try:
                    _, high = self._consumer.get_watermark_offsets(
                        tp, timeout=max(0.1, deadline - time.monotonic()))
                    break
                except KafkaException as exc:
                    # on a cluster, the partition's leader may not know a topic created a moment ago yet
                    if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART and time.monotonic() < deadline:
                        time.sleep(0.2)
                        continue
                    self._consumer.close()
                    raise KeyStoreUnavailableError(
                        f"key store {self.topic}: cannot read partition {tp.partition} ({exc.args[0].str()})") from None
            ends[tp.partition] = high
        self._consumer.assign(partitions)
        positions = {p: 0 for p in ends}
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                self._consumer.close()
                raise KeyStoreUnavailableError(
                    f"key store {self.topic} not read to its end within {self.timeout}s "
                    f"(at {positions}, end {ends})")
            for message in self._consumer.consume(10_000, timeout=0.2):
                self._apply(message)
                if message.error() is None:
                    positions[message.partition()] = message.offset() + 1
            for tp in self._consumer.position([TopicPartition(self.topic, p) for p in ends]):
                if tp.offset >= 0:
                    positions[tp.partition] = max(positions[tp.partition], tp.offset)
        self._producer = Producer(self.settings.client_config(**{
            "enable.idempotence": True, "acks": "all", "linger.ms": 0, "client.id": "auditseal-keystore",
            "allow.auto.create.topics": False, "message.timeout.ms": int(self.timeout * 1000),
            "error_cb": self._on_producer_error, "log_level": 2}))
        self._follower = threading.Thread(target=self._follow, name="auditseal-keystore-follow", daemon=True)
        self._follower.start()
        return self

    def _on_producer_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error.str()

    def close(self) -> None:
        """Stop following the topic and drop every unwrapped key."""
        self._closing.set()
        if self._follower is not None:
            self._follower.join(timeout=5)
        with self._lock:
            self._ciphers.clear()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            try:
                self._producer.flush(self.timeout)
            except (KafkaException, SystemError):
                pass  # every write already waited for its acknowledgement in _write; nothing is pending
            self._producer = None

    def __enter__(self) -> KeyStore:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _follow(self) -> None:
        while not self._closing.is_set():
            try:
                for message in self._consumer.consume(1000, timeout=0.2):
                    self._apply(message)
            except (KafkaException, KeyStoreRecordError) as exc:
                # keep following: a bad record or a broker hiccup must not stop erasures from arriving
                self._follow_error = str(exc)
                _log.error("key store %s: %s", self.topic, exc)
                time.sleep(0.5)

    def _apply(self, message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                _log.warning("key store %s: %s", self.topic, error.str())
            return
        name = message.key().decode("utf-8") if message.key() else ""
        value = message.value()
        where = f"{self.topic} offset {message.offset()} key {name!r}"
        with self._lock:
            if name.startswith(SUBJECT_PREFIX):
                pseudonym, _, key_id = name[len(SUBJECT_PREFIX):].rpartition("/")
                if value is None:
                    self._forget(pseudonym, key_id)
                else:
                    self._keys.setdefault(pseudonym, {})[key_id] = WrappedKey.from_value(value, where)
            elif name.startswith(PSEUDONYM_KEY_PREFIX) and value is not None:
                self._pseudonym_keys[int(name[len(PSEUDONYM_KEY_PREFIX):])] = WrappedKey.from_value(value, where)
            elif name.startswith(ERASED_PREFIX) and value is not None:
                pseudonym = name[len(ERASED_PREFIX):]
                self._erasures[pseudonym] = Erasure.from_value(pseudonym, value, where)
                for key_id in list(self._keys.get(pseudonym, {})):
                    if key_id in self._erasures[pseudonym].key_ids:
                        self._forget(pseudonym, key_id)

    def _forget(self, pseudonym: str, key_id: str) -> None:
        keys = self._keys.get(pseudonym, {})
        keys.pop(key_id, None)
        if not keys:
            self._keys.pop(pseudonym, None)
        self._ciphers.pop((pseudonym, key_id), None)
        self._ciphers.pop(pseudonym, None)
        for listener in self._erasure_listeners:
            listener(pseudonym)

    def on_erasure(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(pseudonym)`` (on the follower thread) whenever a subject key is destroyed."""
        self._erasure_listeners.append(listener)

    # -- writing --------------------------------------------------------------------------------

    def _write(self, records: list[tuple[str, bytes | None]]) -> None:
        if self._producer is None:
            raise KeyStoreUnavailableError(f"key store {self.topic} is not open")
        failures: list[str] = []

        def reporter(name: str):
            # no Message method here: confluent-kafka runs a report with a fatal error still pending
            def report(error, _message) -> None:
                if error is not None:
                    failures.append(f"{name}: {error.str()}")
            return report

        try:
            for name, value in records:
                self._producer.produce(self.topic, value=value, key=name.encode(), on_delivery=reporter(name))
            pending = self._producer.flush(self.timeout)
        except (KafkaException, SystemError, BufferError) as exc:
            # a fatal producer error (e.g. no right to write) surfaces from flush
            context = exc.__cause__ or exc.__context__
            cause = self._fatal or (context.args[0].str() if isinstance(context, KafkaException) else str(exc))
            self._producer = None
            raise KeyStoreUnavailableError(f"key store {self.topic} at {self.settings.bootstrap} refused the write "
                                           f"as {self.settings.username}: {cause}") from None
        if pending or failures or self._fatal:
            raise KeyStoreUnavailableError(
                f"key store {self.topic} at {self.settings.bootstrap} did not acknowledge "
                f"{pending + len(failures)} of {len(records)} record(s) within {self.timeout}s as "
                f"{self.settings.username}" + (f" ({failures[0]})" if failures else "")
                + (f" ({self._fatal})" if self._fatal else ""))

    def write_records(self, records: list[tuple[str, bytes | None]]) -> None:
        """Write raw records of this topic's format (what a restore does); durable when it returns."""
        self._write(records)

    # -- pseudonym keys -------------------------------------------------------------------------

    def pseudonym_key(self) -> PseudonymKey:
        """The newest pseudonym key version; PseudonymKeyMissingError if there is none."""
        with self._lock:
            if not self._pseudonym_keys:
                raise PseudonymKeyMissingError(
                    f"key store {self.topic} holds no pseudonym key; `auditseal dev up` creates it (production: "
                    "restore the key store backup, see README \"Personal data\")")
            version = max(self._pseudonym_keys)
            wrapped = self._pseudonym_keys[version]
        return PseudonymKey(version, self._unwrap(wrapped, f"pseudonym key v{version}"))

    def ensure_pseudonym_key(self) -> PseudonymKey:
        """The newest pseudonym key, creating version 1 if the store has none (provisioning only: one writer)."""
        with self._lock:
            exists = bool(self._pseudonym_keys)
        if not exists:
            import os

            material = os.urandom(PSEUDONYM_KEY_BYTES)
            record = WrappedKey(self.kek.key_id, self.kek.wrap(material), _now())
            self._write([(pseudonym_key_name(1), record.to_value())])
            with self._lock:
                self._pseudonym_keys[1] = record
        return self.pseudonym_key()

    # -- subject keys ---------------------------------------------------------------------------

    def _unwrap(self, wrapped: WrappedKey, what: str) -> bytes:
        if wrapped.kek_id != self.kek.key_id:
            raise WrongKekError(f"{what} is wrapped with KEK {wrapped.kek_id!r}, not with the KEK given "
                                f"({self.kek.key_id!r}); give that KEK ({KEK_FILE_VARIABLE} or {KEK_VARIABLE})")
        try:
            # AES-KW (RFC 3394) by the KEK wherever it is: here for a file, inside the token for PKCS#11
            return self.kek.unwrap(wrapped.wrapped)
        except ValueError:
            raise WrongKekError(
                f"{what} does not unwrap with KEK {self.kek.key_id!r}: the key store was written under another "
                f"KEK, or the record is damaged; give the KEK that wrapped it ({KEK_FILE_VARIABLE} or {KEK_VARIABLE})"
            ) from None

    def cipher_for(self, pseudonym: str) -> FieldCipher:
        """A cipher to encrypt ``pseudonym``'s fields: a key it has, or a new one, stored before it is used."""
        with self._lock:
            cached = self._ciphers.get(pseudonym)
            if cached is not None:
                return cached
            keys = self._keys.get(pseudonym)
            if keys:
                key_id = min(keys)  # every client picks the same one of several
                cipher = FieldCipher(pseudonym, SubjectKey(key_id, self._unwrap(keys[key_id], f"key {key_id} of {pseudonym}")))
                self._ciphers[pseudonym] = cipher
                return cipher
        key = new_subject_key()
        record = WrappedKey(self.kek.key_id, self.kek.wrap(key.material), _now())
        # durable in the store before anything is encrypted under it: a key lost here would lose the data
        self._write([(subject_key_name(pseudonym, key.key_id), record.to_value())])
        cipher = FieldCipher(pseudonym, key)
        with self._lock:
            self._keys.setdefault(pseudonym, {})[key.key_id] = record
            self._ciphers[pseudonym] = cipher
        return cipher

    def cipher(self, pseudonym: str, key_id: str) -> FieldCipher:
        """The cipher of one stored key, to decrypt; SubjectErasedError or UnknownSubjectError if it is gone."""
        with self._lock:
            cached = self._ciphers.get((pseudonym, key_id))
            if cached is not None:
                return cached
            wrapped = self._keys.get(pseudonym, {}).get(key_id)
            erasure = self._erasures.get(pseudonym)
        if wrapped is None:
            if erasure is not None:
                raise SubjectErasedError(erasure, f"subject {pseudonym} was erased on {erasure.erased_at} by "
                                         f"{erasure.erased_by} (erasure event {erasure.erasure_event_id}); "
                                         "its fields can never be read again")
            raise UnknownSubjectError(f"the key store holds no key {key_id} of subject {pseudonym}")
        cipher = FieldCipher(pseudonym, SubjectKey(key_id, self._unwrap(wrapped, f"key {key_id} of {pseudonym}")))
        with self._lock:
            self._ciphers[(pseudonym, key_id)] = cipher
        return cipher

    def key_ids(self, pseudonym: str) -> tuple[str, ...]:
        """The ids of the keys ``pseudonym`` holds now."""
        with self._lock:
            return tuple(sorted(self._keys.get(pseudonym, {})))

    def wrapped_keys(self, pseudonym: str) -> dict[str, bytes]:
        """The wrapped bytes of each key ``pseudonym`` holds (what erasure must make disappear)."""
        with self._lock:
            return {key_id: w.wrapped for key_id, w in self._keys.get(pseudonym, {}).items()}

    def erasure(self, pseudonym: str) -> Erasure | None:
        """The erasure of ``pseudonym``, if it was erased."""
        with self._lock:
            return self._erasures.get(pseudonym)

    def subject_count(self) -> int:
        """How many subjects hold a key."""
        with self._lock:
            return len(self._keys)

    # -- erasure --------------------------------------------------------------------------------

    def erase(self, pseudonym: str, erased_by: str, erasure_event_id: str) -> Erasure:
        """Tombstone every key of ``pseudonym`` and record its erasure; UnknownSubjectError if it has none."""
        key_ids = self.key_ids(pseudonym)
        if not key_ids:
            previous = self.erasure(pseudonym)
            if previous is not None:
                raise SubjectErasedError(previous, f"subject {pseudonym} was already erased on "
                                         f"{previous.erased_at} by {previous.erased_by}")
            raise UnknownSubjectError(f"the key store holds no key of subject {pseudonym}: nothing to erase "
                                      "(wrong id, or no event about it was ever protected)")
        erasure = Erasure(pseudonym, _now(), erased_by, key_ids, erasure_event_id)
        self._write([(subject_key_name(pseudonym, k), None) for k in key_ids]
                    + [(erased_name(pseudonym), erasure.to_value())])
        with self._lock:
            self._erasures[pseudonym] = erasure
            for key_id in key_ids:
                self._forget(pseudonym, key_id)
        return erasure

    def force_compaction(self, pseudonym: str, key_ids: tuple[str, ...], timeout: float) -> float:
        """Make the destroyed keys' records physically go: wait for the segment to be rollable, append the
        ``roll`` record, then read the topic from the start until no record of those keys but tombstones
        is left (the cleaner has rewritten the segment), and wait for the broker to unlink the replaced
        segment file (``file.delete.delay.ms`` and a margin). Returns the seconds it took;
        KeyStoreUnavailableError after ``timeout``.

        What is read is the partition leader's log; each follower replica's cleaner rewrites its own copy
        on its own schedule, within ``max.compaction.lag.ms``."""
        started = time.monotonic()
        time.sleep(SEGMENT_MS / 1000 + 0.5)
        self._write([(ROLL_KEY, _now().encode())])
        names = {subject_key_name(pseudonym, k).encode() for k in key_ids}
        while True:
            if not self._key_records_left(names):
                time.sleep(FILE_DELETE_DELAY_MS / 1000 + 2.0)
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise KeyStoreUnavailableError(
                    f"the records of the destroyed keys are still in {self.topic} after {timeout:.0f}s; the "
                    f"cleaner removes them within max.compaction.lag.ms ({DELETE_RETENTION_MS // 3_600_000} h)")
            time.sleep(2.0)
            # a new append after another segment.ms lets the segment holding the tombstone roll too
            self._write([(ROLL_KEY, _now().encode())])

    def _key_records_left(self, names: set[bytes]) -> bool:
        consumer = Consumer(self.settings.client_config(**{
            "group.id": "auditseal-keystore-view", "enable.auto.commit": False, "client.id": "auditseal-keystore"}))
        try:
            metadata = consumer.list_topics(self.topic, timeout=self.timeout)
            found = False
            for p in metadata.topics[self.topic].partitions:
                tp = TopicPartition(self.topic, p, OFFSET_BEGINNING)
                _, high = consumer.get_watermark_offsets(tp, timeout=self.timeout)
                consumer.assign([tp])
                position = 0
                deadline = time.monotonic() + self.timeout
                while position < high and time.monotonic() < deadline:
                    for message in consumer.consume(10_000, timeout=0.5):
                        if message.error() is not None:
                            continue
                        position = message.offset() + 1
                        if message.key() in names and message.value() is not None:
                            found = True
                if position < high:
                    raise KeyStoreUnavailableError(f"key store {self.topic} not read to its end in {self.timeout}s")
            return found
        finally:
            consumer.close()


def kek_from_env(env: Mapping[str, str]) -> KeyEncryptionKey:
    """The key store's KEK: ``AUDITSEAL_KEK=pkcs11:LABEL``, a non-extractable AES key in the token of the
    ``AUDITSEAL_PKCS11_*`` variables (:mod:`pipeline.keys.pkcs11`; it wraps and unwraps inside the token and
    never leaves it), or ``AUDITSEAL_KEK_FILE``, a key file (the format of
    :func:`pipeline.archive.encryption.load_master_key`; for a laptop). Exactly one; ConfigError otherwise."""
    from pathlib import Path

    from pipeline.archive.encryption import load_master_key
    from pipeline.errors import ConfigError

    spec, path = env.get(KEK_VARIABLE), env.get(KEK_FILE_VARIABLE)
    if spec and path:
        raise ConfigError(f"set one of {KEK_VARIABLE} (pkcs11:LABEL, in a token) and {KEK_FILE_VARIABLE} (a file), "
                          "not both")
    if path:
        return load_master_key(Path(path))
    if not spec:
        raise ConfigError(f"personal-data protection needs the key-encryption key: set {KEK_FILE_VARIABLE} "
                          f"or {KEK_VARIABLE}=pkcs11:LABEL (`auditseal dev env --role privacy` prints it for the "
                          "local stack)")
    from pipeline.keys.master import TOKEN_PREFIX
    from pipeline.keys.pkcs11 import MODULE_VARIABLE, Pkcs11Config, open_token

    label = spec[len(TOKEN_PREFIX):] if spec.startswith(TOKEN_PREFIX) else ""
    if not label:
        raise ConfigError(f"{KEK_VARIABLE}={spec!r}: expected pkcs11:LABEL (a key file goes in {KEK_FILE_VARIABLE})")
    config = Pkcs11Config.from_env(env)
    if config is None:
        raise ConfigError(f"{KEK_VARIABLE}={spec!r} is in a PKCS#11 token, but {MODULE_VARIABLE} is not set")
    return open_token(config).master_key(label)


def keystore_from_env(env: Mapping[str, str] | None = None, **options: object) -> KeyStore:
    """A (not yet open) KeyStore from the environment: :func:`keystore_settings` and :func:`kek_from_env`."""
    import os

    env = os.environ if env is None else env
    return KeyStore(keystore_settings(env), kek_from_env(env), **options)  # type: ignore[arg-type]
