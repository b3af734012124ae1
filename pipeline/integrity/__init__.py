"""The pure integrity core of the sealer and the verifier.

`chain` holds the per-partition hash chain, `merkle` the RFC 6962/9162 Merkle tree and its
inclusion proofs, `checkpoint` the Ed25519-signed batch checkpoint, `keyring` the signing key
and the public keyring (the only module that touches files), and `errors` one exception type
per failure a caller can act on. Import what you need from the module that holds it.
"""
