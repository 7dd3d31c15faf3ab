"""Put charon's objects for a CHILD_SA into, or take them out of, the in-memory kernel."""

from factories import charon_objects


def install(kernel, ch, policies=True):
    states, pols = charon_objects(ch)
    for s in states:
        kernel.states[(s.daddr, s.spi, s.proto)] = s
    for p in pols if policies else []:
        kernel.policies[(p.sel, p.dir, p.mark, p.if_id)] = p


def remove(kernel, ch, policies=True):
    states, pols = charon_objects(ch)
    for s in states:
        kernel.states.pop((s.daddr, s.spi, s.proto), None)
    for p in pols if policies else []:
        kernel.policies.pop((p.sel, p.dir, p.mark, p.if_id), None)
