"""The backend's own rules on the in-memory kernel: what a batch does when an acquire's
placeholder holds the SPI of an SA being added (the kernel side: tests/lab, sim_placeholder.sh)."""

from __future__ import annotations

import errno
import logging
from dataclasses import replace

from factories import KEY, charon_objects, child

from swan_offload.backend import AddState, DelState, MemoryBackend


def _out_state():
    return charon_objects(child())[0][0]


def placeholder(st):
    """What xfrm_state_find leaves for a packet whose template names an SPI no SA has: no algorithm, no key."""
    return replace(st, aead=None, crypt=None, auth=None, replay=None, curlft=None)


def test_an_acquire_placeholder_holding_the_spi_is_replaced_by_the_sa(caplog):
    st = _out_state()
    k = MemoryBackend()
    k.states[(st.daddr, st.spi, st.proto)] = placeholder(st)
    with caplog.at_level(logging.INFO):
        assert k.apply([AddState(st)]) == [None]
    assert k.states[(st.daddr, st.spi, st.proto)] == st
    # the retry is one batch: the placeholder's DELSA and the NEWSA side by side
    assert [[type(op).__name__ for op in b] for b in k.batches] == [["AddState"], ["DelState", "AddState"]]
    assert "1 SPI(s) held by the kernel's acquire placeholders" in caplog.text and f"0x{st.spi:08x}" in caplog.text
    assert KEY.hex() not in caplog.text


def test_a_real_sa_holding_the_spi_still_answers_eexist():
    st = _out_state()
    k = MemoryBackend()
    other = replace(st, reqid=7)
    k.states[(st.daddr, st.spi, st.proto)] = other
    (err,) = k.apply([AddState(st)])
    assert err is not None and err.errno == errno.EEXIST
    assert k.states[(st.daddr, st.spi, st.proto)] == other and len(k.batches) == 1


def test_a_placeholder_made_again_after_each_removal_is_given_up_on():
    """A packet stream that makes a new placeholder between every DELSA and NEWSA: a few tries, then EEXIST."""
    st = _out_state()
    key = (st.daddr, st.spi, st.proto)

    class Busy(MemoryBackend):
        def _one(self, op):
            res = super()._one(op)
            if isinstance(op, DelState):
                self.states[key] = placeholder(st)
            return res

    k = Busy()
    k.states[key] = placeholder(st)
    (err,) = k.apply([AddState(st)])
    assert err is not None and err.errno == errno.EEXIST
    assert len(k.batches) == 4  # the batch and three tries
