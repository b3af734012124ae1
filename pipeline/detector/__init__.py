"""The anomalous-access detector (``auditseal detect``): pure rules (``rules``) and the Faust app (``app``)."""
