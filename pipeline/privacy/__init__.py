"""Personal data in an immutable log: pseudonyms, per-subject encryption, the key store, reveal and erasure.

Pure cryptography in :mod:`.crypto` and the key store's record formats in :mod:`.records`; the event-level
protection (the producer's hook) in :mod:`.protector`; the Kafka adapter at the edge in :mod:`.keystore`,
with :mod:`.backup`, :mod:`.provision` (``dev up``'s step) and :mod:`.residue` (the on-disk scan that
proves an erasure). Nothing is imported here, so a service that does not protect personal data never
loads any of it.
"""
