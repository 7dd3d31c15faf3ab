"""XFRM netlink: constants, message classes, packing, the socket.

The message classes subclass pyroute2's ``nla``/``nlmsg`` (pyroute2.netlink), imported
without pyroute2's top-level ``__init__`` (swan_offload/bare.py, registered by the package).
"""
