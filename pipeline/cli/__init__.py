"""The ``auditseal`` command line: one harness (:mod:`pipeline.cli.main`) and one module per command group."""
