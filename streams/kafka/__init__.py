"""The Kafka side of the worker: the Faust app (:mod:`.app`), its batch intake
(:mod:`.intake`), topic administration (:mod:`.admin`) and the start-up check of the brokers
(:mod:`.preflight`)."""
