"""The lean dump reader against the C compiler's offsets and the full decoder, field by field."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from swan_offload.xfrm import constants as c
from swan_offload.xfrm import counters
from swan_offload.xfrm import objects as o
from swan_offload.xfrm.netlink import decode_messages, walk_messages

FIELDS = {"id": 56, "curlft": 160, "stats": 192, "seq": 204, "reqid": 208, "family": 212, "mode": 214,
          "replay_window": 215, "flags": 216}


def test_offsets_are_the_c_compilers(tmp_path):
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler to read the kernel's struct offsets")
    body = "".join(f'printf("{f} %zu\\n", offsetof(struct xfrm_usersa_info, {f}));\n' for f in FIELDS)
    exe = str(tmp_path / "offsets")
    subprocess.run([cc, "-x", "c", "-o", exe, "-"], check=True, text=True,
                   input=f"#include <stdio.h>\n#include <stddef.h>\n#include <linux/xfrm.h>\nint main(void){{\n{body}"
                         f"printf(\"size %zu\\n\", sizeof(struct xfrm_usersa_info));return 0;}}\n")
    got = dict(line.split() for line in subprocess.run([exe], check=True, capture_output=True, text=True).stdout.splitlines())
    assert {k: int(v) for k, v in got.items()} == {**FIELDS, "size": counters._INFO}


def states():
    key = o.Secret(bytes(range(20)))
    for i, (fam, esn, off) in enumerate([(socket.AF_INET, False, None), (socket.AF_INET, True, o.Offload(7, 4)),
                                         (socket.AF_INET6, False, o.Offload(3, 6)), (socket.AF_INET6, True, None)]):
        d, s = ("192.0.2.2", "192.0.2.1") if fam == socket.AF_INET else ("2001:db8::2", "2001:db8::1")
        any_ = "0.0.0.0" if fam == socket.AF_INET else "::"
        yield o.XfrmState(
            o.Selector(fam, any_, any_, 0, 0), d, 0xC0000000 + i * 0x01010101, c.IPPROTO_ESP, s, fam, c.XFRM_MODE_TUNNEL, 40 + i,
            replay_window=0 if esn else 32, flags=c.XFRM_STATE_ESN if esn else 0,
            curlft=o.LifetimeCur(123456789012 + i, 98765 + i, 1_700_000_000 + i, 1_700_000_100 + i),
            stats=o.Stats(1 + i, 2 + i, 3 + i), seq=77,
            aead=o.Algo("rfc4106(gcm(aes))", key, 160, icv_len=128),
            replay=None if esn else o.ReplayState(500 + i, 400 + i, 0xF0F0),
            replay_esn=o.ReplayEsn(4, 0xFFFFFFF0, 400, 1, 2, 128, (1, 2, 3, 4)) if esn else None,
            encap=o.Encap(c.UDP_ENCAP_ESPINUDP, 4500, 4500, "") if i == 2 else None, offload=off)


def raw(states_):
    out = []
    for st in states_:
        msg = o.state_to_msg(st)
        msg["header"] = {"type": c.XFRM_MSG_NEWSA, "flags": 2, "sequence_number": 1, "pid": 0}
        msg.encode()
        out.append(bytes(msg.data))
    return out


def test_every_field_equals_the_full_decoders_and_no_key_is_held():
    chunks = raw(states())
    lean = list(counters.parse_dump(chunks))
    full = [o.state_from_msg(m) for _t, _f, _s, _p, m in decode_messages(b"".join(chunks))]
    assert len(lean) == len(full) == 4
    for a, b in zip(lean, full):
        assert (a.daddr, a.spi, a.proto, a.reqid, a.family) == (b.daddr, b.spi, b.proto, b.reqid, b.family)
        assert (a.curlft, a.stats, a.replay, a.replay_esn, a.offload) == (b.curlft, b.stats, b.replay, b.replay_esn, b.offload)
        assert bytes(range(20)).hex() not in repr(a)
    # other messages of a dump (the end, an error) are skipped
    assert [x.spi for x in counters.parse_dump([chunks[0], b"\x14\0\0\0\x03\0\0\0" + bytes(12)])] == [lean[0].spi]
    assert [len(m) for _t, _f, _s, _p, m in walk_messages(b"".join(chunks))] == [len(x) for x in chunks]
