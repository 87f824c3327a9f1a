"""What the workers keep and where: Redis key names (:mod:`.keys`), one partition's in-memory
state and its serialisation (:mod:`.partition`), the fenced atomic checkpoint and outbox
(:mod:`.checkpoint`), the label-join store (:mod:`.joins`), drift-score history
(:mod:`.history`), stored baselines (:mod:`.baselines`) and the read-only walk over a group's
state that the operator tools share (:mod:`.reader`)."""
