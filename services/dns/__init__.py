"""The cluster DNS: records.py answers names from Services and Endpoints,
server.py serves them over UDP and TCP (run it with `python -m services.dns`)."""
