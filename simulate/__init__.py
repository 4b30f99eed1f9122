"""`streamrec simulate`: the live loop, closed by simulated users, with an online vs frozen A/B.

Where this sits in the data flow: it is the application. Like ``replay`` it is a source of the two
logs, but instead of replaying feeds that were logged, it asks the model servers for feeds and
reacts to what they rank; the FeatureLogs come from the servers, the actions from here (through
``streamrec.applog``), and the joiner, the trainer and the replicas close the loop::

    simulate.users --request--> serving (2 replicas: online, frozen) --FeatureLog--> features topic
          \\--actions (client)--> actions topic --> joiner --> examples --> trainer --deltas--> online replica

``users`` (who, which arm, what is offered, how they react), ``pipeline`` (the stage processes),
``run`` (the loop), ``report`` (windows, Wilson intervals, table, plot).
"""
