"""The verifier: proves a sealed log (topic or archive) was not altered, dropped, reordered or forged."""
