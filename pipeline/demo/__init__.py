"""``readside demo``: the demo shop, end to end on the local stack.

:mod:`pipeline.demo.data` builds and changes the shop's rows (deterministic for
a seed); :mod:`pipeline.demo.run` resets the database, topics, connector and
read stores, starts workers and shows the read models converging.
"""
