"""The evidence report for auditors: per-control checks measured live, as JSON and a self-contained HTML page."""
