#!/usr/bin/env python3
"""Zeroes the CUDA cubins of every GPU architecture but one in a shared library's .nv_fatbin section.

    python3 ci/prune_fatbin.py IN.so OUT.so ARCH        (ARCH: 90 for sm_90, the H100/H200)

The fatbin headers stay as they are and the file keeps its size and layout; only the payloads of the other
architectures' entries become zeros, so the file compresses to about what the kept architecture needs. On a GPU of the
kept architecture nothing changes: the driver loads that architecture's cubin. Refuses a library that has PTX or
compressed entries (a driver could JIT or unpack those), or no entry of the kept architecture.
"""
import struct
import sys

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_ELF = 1, 2
FLAG_COMPRESSED = 0x2000


def sections(data: bytes) -> dict:
    if data[:4] != b"\x7fELF" or data[4] != 2:
        sys.exit("prune_fatbin: not a 64-bit ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    heads = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = heads[shstrndx][4]
    names = {}
    for name, _type, _flags, _addr, offset, size in heads:
        end = data.index(b"\0", strtab + name)
        names[data[strtab + name:end].decode()] = (offset, size)
    return names


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, dst, keep = sys.argv[1], sys.argv[2], int(sys.argv[3])
    data = bytearray(open(src, "rb").read())
    fatbin = sections(bytes(data)).get(".nv_fatbin")
    if fatbin is None:
        sys.exit(f"prune_fatbin: {src} has no .nv_fatbin section")
    pos, end = fatbin[0], fatbin[0] + fatbin[1]
    kept = zeroed = 0
    while pos < end:
        magic, _version, head, size = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # fatbins are 8-byte aligned
            continue
        entry, last = pos + head, pos + head + size
        while entry < last:
            kind, _, entry_head, payload = struct.unpack_from("<HHIQ", data, entry)
            if entry_head == 0:
                break
            arch, = struct.unpack_from("<I", data, entry + 28)
            flags, = struct.unpack_from("<Q", data, entry + 40)
            if kind != KIND_ELF or flags & FLAG_COMPRESSED:
                sys.exit(f"prune_fatbin: {src} has {'PTX' if kind == KIND_PTX else 'compressed'} entries; refusing to prune")
            if arch == keep:
                kept += payload
            else:
                data[entry + entry_head:entry + entry_head + payload] = bytes(payload)
                zeroed += payload
            entry += entry_head + payload
        pos = last
    if kept == 0:
        sys.exit(f"prune_fatbin: {src} has no sm_{keep} cubins")
    open(dst, "wb").write(data)
    print(f"prune_fatbin: kept sm_{keep} cubins ({kept / 1e6:.1f} MB), zeroed {zeroed / 1e6:.1f} MB of other architectures")


if __name__ == "__main__":
    main()
