"""Personal data in an immutable log: pseudonyms, per-subject encryption, the key store, reveal and erasure.

Pure cryptography in :mod:`.crypto`, the key store's record formats in :mod:`.records`, the event-level
protection in :mod:`.protector`, and the Kafka adapter at the edge in :mod:`.keystore`. Nothing is
imported here, so a service that does not protect personal data never loads any of it.
"""
