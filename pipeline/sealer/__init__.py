"""The sealer: a Faust agent that chains and signs raw audit events into ``audit.sealed``.

- :mod:`pipeline.wire.sealed` — the chain entries and their hashed encoding (pure)
- :mod:`pipeline.sealer.chain_sealer` — one chain's state machine: seal, reject, checkpoint (pure)
- :mod:`pipeline.sealer.output` — transactional, fenced writes to ``audit.sealed`` and recovery (Kafka I/O)
- :mod:`pipeline.sealer.app` — the Faust app and its agent
"""
