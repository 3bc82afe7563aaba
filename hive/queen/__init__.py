"""hive's side of the link to rbee's Queen, in both generations of rbee's protocol: the
seed's push heartbeat (push.py), the current ready callback (ready.py) and the telemetry
stream the Queen pulls (served by hive/api/queen.py); discovery and its persistence
(discovery.py); how each protocol fares (tracker.py); the link that runs them (link.py)."""
