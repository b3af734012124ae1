"""SIEM-ready output: sealed records as OCSF JSON with their integrity evidence (``auditseal export``,
``auditseal siem-bridge``). :mod:`.ocsf` maps, :mod:`.batches` orders, :mod:`.evidence` re-verifies."""
