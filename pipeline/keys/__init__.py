"""Key custody: where the sealer's signing keys and the archive's master key live (a PKCS#11 token or
files), which key signs when, and the lifecycle operators run (``auditseal keys``)."""
