"""The Kafka side: the only package that imports a Kafka client library (faust, aiokafka,
confluent_kafka; ``.importlinter`` holds everything else to it). The worker's Faust app
(:mod:`.app`), its batch intake (:mod:`.intake`) and broker credentials (:mod:`.credentials`);
topic administration and the cluster check of every command (:mod:`.admin`); the alert topic
read as an onlooker (:mod:`.reader`); the start-up check of the brokers (:mod:`.preflight`) and
of the libraries' internals the worker relies on (:mod:`.compat`)."""
