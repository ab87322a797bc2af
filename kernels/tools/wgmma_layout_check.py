# Desk check of the Hopper (wgmma) kernels without a GPU, in the manner of mma_layout_check.py: it
# re-states in plain Python (1) where load_tile_sw128 puts every element of a tile and where the tensor
# cores read each operand element through the descriptors kmajor_desc / nmajor_desc, using the canonical
# 128B-swizzle layouts of the PTX ISA (K-major: rows 128 B apart, 8-row groups SBO apart; N-major: N
# contiguous in 64-element runs LBO apart, K rows 128 B apart, 8-row groups SBO apart; the XOR of address
# bits [4:6] with [7:9] applied to the absolute address); (2) the forward kernel's software pipeline (which
# shared-memory slot holds which K/V tile when each product reads it, and that no slot is overwritten while
# a product may still read it); (3) the dK/dV kernel's walk over (head, query tile) pairs with empty lists
# in between. It checks the index arithmetic and the schedule as written in the .cu files, not the
# compiled code or the hardware: cpsim_wgmma_layout_tests does that on a GPU. Keep it in step with
# kernels/src/wgmma_helpers.cuh, attention_fwd_wgmma.cu and attention_bwd_wgmma.cu.
# Usage: python3 kernels/tools/wgmma_layout_check.py   (exit 1 on the first mismatch)
import random
import sys

PANEL = 64 * 128  # kPanelBytes
ATOM = 1024       # kSwizzleAtomBytes


def sw128(row, ch):  # wgmma_helpers.cuh
    return (ch >> 3) * PANEL + row * 128 + (((ch & 7) ^ (row & 7)) << 4)


def stored(base, row, col):  # byte address of element (row, col) of a 64 x D tile after load_tile_sw128
    return base + sw128(row, col // 8) + 2 * (col % 8)


def swizzle(addr):  # Swizzle<3,4,3> on the absolute shared-memory byte address
    return addr ^ (((addr >> 7) & 7) << 4)


def read_kmajor(start, sbo, row, k):  # element (row, k) of a K-major operand, k in [0, 16)
    k0, k1 = k % 8, k // 8
    r0, r1 = row % 8, row // 8
    return swizzle(start + r0 * 128 + r1 * sbo + 2 * k0 + 16 * k1)


def read_nmajor(start, lbo, sbo, k, n):  # element (k, n) of an N-major operand, k in [0, 16)
    n0, n1, n2 = n % 8, (n // 8) % 8, n // 64
    k0, k1 = k % 8, k // 8
    return swizzle(start + 2 * n0 + 16 * n1 + lbo * n2 + 128 * k0 + sbo * k1)


def kmajor_desc(tile, kk):  # -> (start, lbo, sbo)
    return tile + (kk >> 2) * PANEL + (kk & 3) * 32, 16, ATOM


def nmajor_desc(tile, kk):
    return tile + kk * 16 * 128, PANEL, ATOM


def fail(msg):
    print("MISMATCH:", msg)
    sys.exit(1)


def check_layouts():
    base = 3 * 1024 * 17  # any 1024-aligned tile base (align1024)
    for D in (64, 128):
        # S = Q K^T and the backward's S^T, dP, dP^T: both operands K-major, rows 0..63, k = 16 kk + j
        for kk in range(D // 16):
            start, _, sbo = kmajor_desc(base, kk)
            for row in range(64):
                for j in range(16):
                    if read_kmajor(start, sbo, row, j) != stored(base, row, 16 * kk + j):
                        fail(f"K-major D={D} kk={kk} row={row} k={j}")
        # P V, dV += P^T dO, dK += dS^T Q, dQ += dS K: B N-major, rows of the tile = the reduction index
        for kk in range(4):
            start, lbo, sbo = nmajor_desc(base, kk)
            for j in range(16):
                for n in range(D):
                    if read_nmajor(start, lbo, sbo, j, n) != stored(base, 16 * kk + j, n):
                        fail(f"N-major D={D} kk={kk} k={j} n={n}")
        # every element of a tile has its own address (the store is a permutation of the tile's bytes)
        addrs = {stored(base, r, c) for r in range(64) for c in range(D)}
        if len(addrs) != 64 * D or max(addrs) - base >= 64 * D * 2:
            fail(f"store layout D={D} is not a permutation")
    print("layouts: K-major (D 64, 128) and N-major (N 64, 128) descriptors read what load_tile_sw128 stored")


def check_forward_pipeline(n_tiles):
    """attention_fwd_wgmma.cu: slots of K and V, cp.async groups, wgmma groups, as issued per iteration."""
    K, V = [None, None], [None, None]      # what each slot holds (tile index) once its load lands
    pending = []                           # cp.async loads in flight: (kind, slot, tile)
    readers = {("K", 0): [], ("K", 1): [], ("V", 0): [], ("V", 1): []}  # in-flight wgmma readers per slot

    def land_all():                        # cp_async_wait<0> (+ proxy fence)
        for kind, slot, t in pending:
            (K if kind == "K" else V)[slot] = t
        pending.clear()

    def load(kind, slot, t):
        if readers[(kind, slot)]:
            fail(f"{kind} slot {slot} overwritten while a wgmma may still read it")
        pending.append((kind, slot, t))

    def use(kind, slot, t, reader):
        if any(p[:2] == (kind, slot) for p in pending):
            fail(f"{reader} reads {kind} slot {slot} while a load into it is still in flight")
        if (K if kind == "K" else V)[slot] != t:
            fail(f"{reader} reads {kind} slot {slot}: holds tile {(K if kind == 'K' else V)[slot]}, wants tile {t}")
        readers[(kind, slot)].append(reader)

    in_flight = []                         # wgmma groups: list of reader names per group

    def commit(names):
        in_flight.append(names)

    def wg_wait(n):                        # all but the n most recent groups complete
        while len(in_flight) > n:
            done = in_flight.pop(0)
            for key in readers:
                readers[key] = [r for r in readers[key] if r not in done]

    # prologue
    load("K", 0, 0), load("V", 0, 0)
    land_all()
    use("K", 0, 0, "S0")
    commit(["S0"])
    if n_tiles > 1:
        load("K", 1, 1)
    wg_wait(0)
    for e in range(n_tiles):
        slot = e & 1
        wg_wait(0)                         # step 2
        land_all()                         # step 3 (+ barrier: every warp past its waits)
        if e + 2 < n_tiles:
            load("K", slot, e + 2)
        if e + 1 < n_tiles:
            load("V", slot ^ 1, e + 1)
        group = []
        if e + 1 < n_tiles:
            use("K", slot ^ 1, e + 1, f"S{e + 1}")
            group = [f"S{e + 1}"]
        commit(group)
        use("V", slot, e, f"PV{e}")
        commit([f"PV{e}"])
        wg_wait(1)
        if any(f"S{e + 1}" in g for g in in_flight):
            fail(f"S{e + 1} still in flight when its softmax starts")
    wg_wait(0)


def check_dkdv_walk(trials=2000):
    """attention_bwd_wgmma.cu: the cursor over (head, query-tile entry) pairs, and the pair each prefetch loads."""
    rnd = random.Random(7)
    for _ in range(trials):
        n_heads = rnd.randint(1, 5)
        lists, off = [], 0
        for _h in range(n_heads):
            n = rnd.choice([0, 0, 1, 2, 5])
            lists.append((off, off + n))
            off += n
        want = [(h, e) for h, (b0, b1) in enumerate(lists) for e in range(b0, b1)]

        def advance(h, e, b):
            e += 1
            while e >= b[1]:
                h += 1
                if h >= n_heads:
                    break
                b = lists[h]
                e = b[0]
            return h, e, b

        h, b = 0, lists[0]
        e = b[0]
        while e >= b[1]:
            h += 1
            if h >= n_heads:
                break
            b = lists[h]
            e = b[0]
        got, prefetched = [], [(h, e)] if h < n_heads else []
        while h < n_heads:
            got.append((h, e))
            h2, e2, _ = advance(h, e, b)
            if h2 < n_heads:
                prefetched.append((h2, e2))
            h, e, b = advance(h, e, b)
        if got != want or prefetched != want:
            fail(f"dK/dV walk over {lists}: visited {got}, prefetched {prefetched}, want {want}")


def main():
    check_layouts()
    for n in range(1, 9):
        check_forward_pipeline(n)
    print("forward pipeline: every S and P V product reads the tile it wants; no slot is overwritten in use (1..8 tiles)")
    check_dkdv_walk()
    print("dK/dV walk: every (head, query tile) pair visited once, in order, each prefetched one step ahead")


if __name__ == "__main__":
    main()
