"""Benchmarks of streamdrift against common peers; ``python -m bench.quality`` (``make quality``).

``bench.scenarios`` makes seeded, labelled streams with known change points, ``bench.columns``
runs each detector column over them (streamdrift through its monitors, river's ADWIN and
Page-Hinkley, a tutorial per-window test), ``bench.scoring`` turns alarms into detection rate,
delay, false alarms and duplicates, and ``bench.quality`` runs it all and prints the table.

``python -m bench.throughput`` (``make bench``) measures throughput, latency and cost beside a
bare consumer, a hand-written river loop and a Faust agent (``bench.peers``), on events from
``bench.load``, natively and through the input adapters (``bench.adapters``).
"""
