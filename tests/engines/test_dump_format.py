"""The dump wire format on its own: checksums, maps, directory and EA images (spec §2-§11)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndmpd.engines.dump import format as fmt

VOL = fmt.Volume(date=1_700_000_000, label=b"lbl", filesys=b"/fs", dev=b"/dev", host=b"h", ntrec=10)

inodes = st.builds(
    fmt.Inode,
    mode=st.integers(0, 0xFFFF),
    nlink=st.integers(0, 0x7FFF),
    uid=st.integers(0, 2**32 - 1),
    gid=st.integers(0, 2**32 - 1),
    size=st.integers(0, 2**64 - 1),
    atime=st.integers(0, 2**32 - 1),
    atime_us=st.integers(0, 999_999),
    mtime=st.integers(0, 2**32 - 1),
    mtime_us=st.integers(0, 999_999),
    rdev=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 2**32 - 1),
    blocks=st.integers(0, 2**31 - 1),
)


@settings(max_examples=200, deadline=None)
@given(
    ino=inodes,
    ctype=st.sampled_from([1, 2, 3, 4, 5, 6]),
    tapea=st.integers(0, 2**32 - 1),
    inumber=st.integers(0, 2**32 - 1),
    addr=st.binary(max_size=512),
    flags=st.sampled_from([2, 3, 0x8002]),
)
def test_fast_checksum_makes_valid_headers(ino, ctype, tapea, inumber, addr, flags):
    buf = bytearray(1024)
    pk = fmt.HeaderPacker(VOL)
    pk.pack_into(buf, 0, ctype=ctype, tapea=tapea, inumber=inumber, ino=ino, count=len(addr),
                 addr=addr, flags=flags)  # fmt: skip
    assert fmt.classify(buf) == "ok"
    h = fmt.parse_header(buf)
    assert (h.ctype, h.tapea, h.inumber, h.mode, h.size, h.uid, h.gid) == (
        ctype, tapea, inumber, ino.mode, ino.size, ino.uid, ino.gid,
    )  # fmt: skip
    assert h.addr == addr and h.count == len(addr) and h.mtime_us == ino.mtime_us
    assert h.db[0] == ino.rdev and h.label == b"lbl" and h.ntrec == 10
    # restore's old-format 16-bit ids are filled too
    assert struct.unpack_from("<HH", buf, 36) == (ino.uid & 0xFFFF, ino.gid & 0xFFFF)


def test_ones_addr_sum_matches_unpacking():
    for n in range(513):
        assert fmt.ones_addr_sum(n) == fmt.addr_sum(fmt.ones(n))


def test_classify_recognises_other_formats():
    buf = bytearray(1024)
    fmt.HeaderPacker(VOL).pack_into(buf, 0, ctype=1, tapea=0, inumber=0, ino=fmt.ZERO_INODE)
    bad = bytearray(buf)
    bad[100] ^= 1
    assert fmt.classify(bad) == "checksum"
    struct.pack_into("<i", bad, 24, fmt.FS_UFS2_MAGIC)
    assert fmt.classify(bad) == "ufs2"
    struct.pack_into(">i", bad, 24, fmt.NFS_MAGIC)
    assert fmt.classify(bad) == "swapped"
    assert fmt.classify(bytes(1024)) == "magic"


@pytest.mark.parametrize("maxino", [3, 9, 10, 8193, 8194, 100_000])
def test_map_bits(maxino):
    m = fmt.map_bytes(maxino)
    assert len(m) % 1024 == 0 and len(m) * 8 >= maxino - 1
    assert len(m) * 8 + 1 == (len(m) // 1024) * 8192 + 1  # restore's maxino covers ours
    bits = [i for i in range(1, len(m) * 8 + 1) if m[(i - 1) >> 3] >> ((i - 1) & 7) & 1]
    assert bits == list(range(2, maxino))


names = st.binary(min_size=1, max_size=255).filter(lambda b: b"/" not in b and b"\0" not in b)


@settings(max_examples=100, deadline=None)
@given(
    entries=st.lists(st.tuples(names, st.integers(1, 2**32 - 1), st.integers(0, 15)), max_size=60)
)
def test_directory_roundtrip_and_block_rule(entries):
    enc = fmt.DirEncoder(7, 2)
    for name, ino, dt in entries:
        enc.add(name, ino, dt)
    data = enc.finish()
    assert len(data) % 512 == 0 and len(data) > 0
    got = list(fmt.iter_dir(data, 512))
    assert got == [(7, 4, b"."), (2, 4, b".."), *((i, d, n) for n, i, d in entries)]
    assert list(fmt.iter_dir(data)) == got  # restore walks 1024-byte blocks
    pos = 0  # no entry crosses a 512-byte boundary
    while pos < len(data):
        reclen = struct.unpack_from("<H", data, pos + 4)[0]
        assert pos // 512 == (pos + reclen - 1) // 512
        pos += reclen


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_iter_dir_never_fails_on_garbage(data):
    for ino, _dt, name in fmt.iter_dir(data):
        assert ino and 0 < len(name) <= 255


def _acl(entries):
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_acl_conversion_matches_ext3_layout():
    v2 = _acl([(1, 6, 2**32 - 1), (2, 6, 1000), (4, 4, 2**32 - 1), (8, 4, 2000),
               (0x10, 6, 2**32 - 1), (0x20, 4, 2**32 - 1)])  # fmt: skip
    disk = fmt.acl_to_disk(v2)
    assert len(disk) == 4 + 4 * 4 + 2 * 8 and disk[:4] == b"\x01\0\0\0"
    assert fmt.acl_from_disk(disk) == v2


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"user.", b"trusted.", b"security."]),
            st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b),
            st.binary(max_size=600),
        ),
        max_size=12,
        unique_by=lambda t: t[0] + t[1],
    )
)
def test_ea_roundtrip_drops_only_what_does_not_fit(attrs):
    pairs = [(ns + n, v) for ns, n, v in attrs]
    image, dropped = fmt.encode_ea(pairs)
    assert len(image) <= fmt.XATTR_MAXSIZE
    kept = [p for p in pairs if p[0] not in {d for d, _ in dropped}]
    assert (fmt.decode_ea(image) if image else []) == kept
    assert all("4096" in why for _, why in dropped)


def test_ea_refuses_unrepresentable_namespaces():
    image, dropped = fmt.encode_ea([(b"system.data", b"x"), (b"user.ok", b"1")])
    assert [d for d, _ in dropped] == [b"system.data"]
    assert fmt.decode_ea(image) == [(b"user.ok", b"1")]


def test_in_inode_ea_format_offsets():
    """The reference dump's inode 35 record (spec §11.2): values at offset + 4."""
    img = bytearray(256)
    struct.pack_into("<I", img, 0, fmt.EA_INODE_MAGIC)
    struct.pack_into("<BBHIII", img, 4, 7, 1, 0x50, 0, 11, 0)
    img[20:27] = b"comment"
    struct.pack_into("<BBHIII", img, 28, 9, 1, 0x44, 0, 10, 0)
    img[44:53] = b"mime_type"
    img[84:95] = b"hello xattr"
    img[72:82] = b"text/plain"
    assert fmt.decode_ea(bytes(img)) == [
        (b"user.comment", b"hello xattr"),
        (b"user.mime_type", b"text/plain"),
    ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_decode_ea_garbage_raises_only_eaerror(data):
    for magic in (fmt.EA_BLOCK_MAGIC, fmt.EA_INODE_MAGIC):
        try:
            fmt.decode_ea(struct.pack("<I", magic) + data)
        except fmt.EAError:
            pass
