"""The worker's pipeline, pure (no Kafka, no Redis): records of one partition in → decode
(:mod:`.codec`) → validate and admit (:mod:`.admission`) → columnar batch and apply to the
monitors (:mod:`.processor`) → findings → alert CloudEvents (:mod:`.alerts`)."""
