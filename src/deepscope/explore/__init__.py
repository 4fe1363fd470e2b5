"""The board's explorer: a data item explained on demand, in a worker process (the web server never imports torch).

:mod:`.worker` runs in that process: it makes the model and the data, loads a run's checkpoint, explains an item and
keeps the pictures in the run's folder (``explore/<key>/``). :mod:`deepscope.dashboard.views.explore` starts it,
queues the page's requests (one per client, with a timeout) and serves what it made.
"""
