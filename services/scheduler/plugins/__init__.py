"""Scheduler plugins, one module each; every module registers its class with
`framework.register` when imported (framework.load_plugins imports them all)."""
