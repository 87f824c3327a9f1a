"""Servers the tests start that the product does not ship: Apache Kafka (see kafka_broker)."""
