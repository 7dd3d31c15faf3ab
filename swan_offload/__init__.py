"""swan-offload. pyroute2 and prometheus_client are registered bare before any module of
ours imports them (bare.py: their package ``__init__`` costs 30 MB the agent does not use)."""

from .bare import bare_package

bare_package("pyroute2")
bare_package("prometheus_client")
