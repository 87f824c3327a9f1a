"""The operator's command line (:mod:`.cli`, the ``streamdrift`` command) and its tools:
``status``, ``report``, ``alerts`` (:mod:`.tail`) and baseline data files (:mod:`.datafiles`)."""
