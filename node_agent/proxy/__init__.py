"""The per-node service proxy: Services and Endpoints -> the nftables table
`ip kubeling` (rules.py renders, syncer.py batches, caches and applies;
run it with `python -m node_agent.proxy`)."""
