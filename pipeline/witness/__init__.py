"""Independent witnesses of the chains' tree heads (C2SP tlog-witness): the client the sealer submits heads with."""
