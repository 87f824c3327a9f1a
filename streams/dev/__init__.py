"""Development and test tooling the worker never imports: embedded servers (Tansu, redis-server)
and worker processes (:mod:`.embedded`), the drifting simulator (:mod:`.simulate`) and
``streamdrift demo`` (:mod:`.demo`)."""
