"""Verified timelines: the archived events matching a query, in time order, each with its chain position
and verification status, and the evidence bundle of their inclusion proofs."""
