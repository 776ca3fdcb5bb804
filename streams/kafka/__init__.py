"""Kafka around the pipeline: broker (the embedded Tansu broker, topics, admin) and
security (TLS/SASL settings for faust, kafka-python and confluent-kafka)."""
