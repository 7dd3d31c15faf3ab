"""The real `vici` client as the tests use it: a session on a path, values as str."""

import socket

import vici


def session(path, timeout=None) -> vici.Session:
    sock = socket.socket(socket.AF_UNIX)
    if timeout is not None:
        sock.settimeout(timeout)
    sock.connect(str(path))
    return vici.Session(sock)


def text(value):
    """vici returns bytes values; compare as str."""
    if isinstance(value, dict):
        return {k: text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [text(v) for v in value]
    return value.decode()
