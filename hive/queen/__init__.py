"""hive's side of the link to rbee's Queen, in both generations of rbee's protocol: the
seed's push heartbeat (its payload: push.py), the current ready callback (link.py) and
the telemetry stream the Queen pulls (served by hive/api/devices.py); discovery and its persistence
(discovery.py); how each protocol fares (tracker.py); the link that runs them (link.py)."""
