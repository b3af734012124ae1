"""The reconciler (``auditseal reconcile``, ``auditseal verify --reconcile``): every source record sealed, with the
same bytes, at its source offset."""
