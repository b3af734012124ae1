"""Small Kafka reading helpers shared by the components that read a topic directly (sealer, reconciler)."""
