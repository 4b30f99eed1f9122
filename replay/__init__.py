"""Log replay: MovieLens-100K (or SYNTHETIC Zipf traffic) as a served feed's feature and action logs.

- ``events``: a dataset's ratings -> the two logs (raw-value ``streamrec.applog`` logs), in send order;
- ``dataset``: the shape a dataset has for the replay; ``synthetic``: the SYNTHETIC generator
  (MovieLens-100K itself is ``examples.movielens.dataset``, beside its feature spec);
- ``config``: ``ReplayConfig``.
"""
