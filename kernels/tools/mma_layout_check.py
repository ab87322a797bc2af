# Desk check of the tensor-core kernels without a GPU: re-states, in plain Python, the shared-memory
# swizzle, the ldmatrix lane addresses and the mma.sync m16n8k16 fragment layouts (PTX ISA) used by
# attention_fwd_mma.cu and attention_bwd_mma.cu, runs one 64x64 tile pair through them and compares
# O, LSE, dQ, dK, dV with plain matrix products. It checks the index arithmetic, not the compiled
# code: keep it in step with the .cu files. Usage: python3 kernels/tools/mma_layout_check.py [64|128]
# Prints the relative errors (expected ~1e-15) and exits 1 if any exceeds 1e-9.
import math
import random
import sys

random.seed(1)
D = int(sys.argv[1]) if len(sys.argv) > 1 else 64; TR = 64
def swz(row, ch): return row * D * 2 + ((ch ^ (row & 7)) << 4)
class Smem:
    def __init__(s): s.m = {}
    def load_tile(s, base, M):  # M: 64 x D
        for r in range(TR):
            for c in range(D // 8):
                for i in range(8):
                    s.m[base + swz(r, c) + 2 * i] = M[r][c * 8 + i]
    def ldsm(s, addrs, trans=False):  # addrs[32] -> regs[lane][4] each a pair
        out = [[None]*4 for _ in range(32)]
        for m in range(4):
            for t in range(32):
                if not trans:
                    a = addrs[8*m + t//4]
                    out[t][m] = (s.m[a + 2*((t%4)*2)], s.m[a + 2*((t%4)*2+1)])
                else:
                    out[t][m] = (s.m[addrs[8*m + (t%4)*2] + 2*(t//4)], s.m[addrs[8*m + (t%4)*2 + 1] + 2*(t//4)])
        return out
def mma(C, A, B0, B1):  # per-lane lists: C[t] 4 floats, A[t] 4 pairs, B0[t],B1[t] pairs
    Am = [[0]*16 for _ in range(16)]; Bm = [[0]*8 for _ in range(16)]
    for t in range(32):
        g, c = t//4, t%4
        for j in range(2):
            Am[g][2*c+j] = A[t][0][j]; Am[g+8][2*c+j] = A[t][1][j]
            Am[g][2*c+8+j] = A[t][2][j]; Am[g+8][2*c+8+j] = A[t][3][j]
            Bm[2*c+j][g] = B0[t][j]; Bm[2*c+8+j][g] = B1[t][j]
    for t in range(32):
        g, c = t//4, t%4
        for j in range(2):
            C[t][j] += sum(Am[g][k]*Bm[k][2*c+j] for k in range(16))
            C[t][2+j] += sum(Am[g+8][k]*Bm[k][2*c+j] for k in range(16))
def zeros(n): return [[[0.0]*4 for _ in range(n)] for _ in range(32)]  # [lane][tile][4]
def pack(a, b): return (a, b)
def rnd(r, c): return [[random.gauss(0, 1) for _ in range(c)] for _ in range(r)]
def mm(A, B): return [[sum(A[i][k]*B[k][j] for k in range(len(B))) for j in range(len(B[0]))] for i in range(len(A))]
def T(A): return [list(x) for x in zip(*A)]

Q, K, V, dO = rnd(64, D), rnd(64, D), rnd(64, D), rnd(64, D)
scale = 1 / math.sqrt(D)
# --- truth
S = mm(Q, T(K)); P = []
lse = []
for i in range(64):
    row = [x*scale for x in S[i]]; m = max(row); s = sum(math.exp(x-m) for x in row); L = m + math.log(s); lse.append(L)
    P.append([math.exp(x - L) for x in row])
O = mm(P, V)
dP = mm(dO, T(V)); delta = [sum(dO[i][d]*O[i][d] for d in range(D)) for i in range(64)]
dS = [[P[i][j]*(dP[i][j]-delta[i]) for j in range(64)] for i in range(64)]
dQ = [[x*scale for x in r] for r in mm(dS, K)]; dK = [[x*scale for x in r] for r in mm(T(dS), Q)]; dV = mm(T(P), dO)

sm = Smem(); TB = TR*D*2
sQ, sK, sV, sO = 0, TB, 2*TB, 3*TB
sm.load_tile(sQ, Q); sm.load_tile(sK, K); sm.load_tile(sV, V); sm.load_tile(sO, dO)
def err(A, B): return max(abs(A[i][j]-B[i][j]) for i in range(len(A)) for j in range(len(A[0]))) / max(abs(x) for r in B for x in r)

# --- forward, all 4 warps
Og = [[None]*D for _ in range(64)]; Lg = [None]*64
log2e = 1.4426950408889634; sl2 = scale*log2e
for w in range(4):
    qf = [sm.ldsm([sQ + swz(w*16 + (l & 15), kk*2 + (l >> 4)) for l in range(32)]) for kk in range(D//16)]
    s = zeros(8)
    for kk in range(D//16):
        for np_ in range(4):
            b = sm.ldsm([sK + swz(np_*16 + ((l >> 4) << 3) + (l & 7), kk*2 + ((l >> 3) & 1)) for l in range(32)])
            C0 = [s[t][2*np_] for t in range(32)]; C1 = [s[t][2*np_+1] for t in range(32)]
            mma(C0, [qf[kk][t] for t in range(32)], [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
            mma(C1, [qf[kk][t] for t in range(32)], [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
    o = zeros(D//8); m = [[-math.inf]*2 for _ in range(32)]; lsum = [[0.0]*2 for _ in range(32)]
    for r in range(2):
        mxs = [max(max(s[t][nt][2*r], s[t][nt][2*r+1]) for nt in range(8)) for t in range(32)]
        for t in range(32):
            mx = max(mxs[tt] for tt in range(32) if tt//4 == t//4)
            m_new = max(m[t][r], mx*sl2); base = m_new
            for nt in range(8):
                for c in (2*r, 2*r+1):
                    s[t][nt][c] = 2 ** (s[t][nt][c]*sl2 - base)
            lsum[t][r] = sum(s[t][nt][c] for nt in range(8) for c in (2*r, 2*r+1)); m[t][r] = m_new
    for kk in range(4):
        pa = [[pack(s[t][2*kk][0], s[t][2*kk][1]), pack(s[t][2*kk][2], s[t][2*kk][3]), pack(s[t][2*kk+1][0], s[t][2*kk+1][1]), pack(s[t][2*kk+1][2], s[t][2*kk+1][3])] for t in range(32)]
        for dp in range(D//16):
            b = sm.ldsm([sV + swz(kk*16 + ((l >> 3) & 1)*8 + (l & 7), dp*2 + (l >> 4)) for l in range(32)], trans=True)
            C0 = [o[t][2*dp] for t in range(32)]; C1 = [o[t][2*dp+1] for t in range(32)]
            mma(C0, pa, [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
            mma(C1, pa, [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
    for t in range(32):
        for r in range(2):
            quad = [tt for tt in range(32) if tt//4 == t//4]
            l = sum(lsum[tt][r] for tt in quad)
            row = w*16 + t//4 + 8*r
            for dn in range(D//8):
                col = dn*8 + (t & 3)*2
                Og[row][col] = o[t][dn][2*r]/l; Og[row][col+1] = o[t][dn][2*r+1]/l
            Lg[row] = (m[t][r] + math.log2(l)) * 0.6931471805599453
print("fwd O err", err(Og, O), "lse err", max(abs(Lg[i]-lse[i]) for i in range(64)))

# --- dq kernel compute (one q tile, one k tile)
dQg = [[None]*D for _ in range(64)]
for w in range(4):
    qf = [sm.ldsm([sQ + swz(w*16 + (l & 15), kk*2 + (l >> 4)) for l in range(32)]) for kk in range(D//16)]
    of = [sm.ldsm([sO + swz(w*16 + (l & 15), kk*2 + (l >> 4)) for l in range(32)]) for kk in range(D//16)]
    p = zeros(8); ds = zeros(8); dq = zeros(D//8)
    for kk in range(D//16):
        for np_ in range(4):
            addrs_k = [sK + swz(np_*16 + ((l >> 4) << 3) + (l & 7), kk*2 + ((l >> 3) & 1)) for l in range(32)]
            addrs_v = [sV + swz(np_*16 + ((l >> 4) << 3) + (l & 7), kk*2 + ((l >> 3) & 1)) for l in range(32)]
            b = sm.ldsm(addrs_k)
            mma([p[t][2*np_] for t in range(32)], qf[kk], [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
            mma([p[t][2*np_+1] for t in range(32)], qf[kk], [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
            b = sm.ldsm(addrs_v)
            mma([ds[t][2*np_] for t in range(32)], of[kk], [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
            mma([ds[t][2*np_+1] for t in range(32)], of[kk], [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
    for t in range(32):
        for nt in range(8):
            for c in range(4):
                row = w*16 + t//4 + 8*(c >> 1)
                pr = 2 ** (p[t][nt][c]*sl2 - lse[row]*log2e)
                ds[t][nt][c] = pr * (ds[t][nt][c] - delta[row])
    for kk in range(4):
        da = [[pack(ds[t][2*kk][0], ds[t][2*kk][1]), pack(ds[t][2*kk][2], ds[t][2*kk][3]), pack(ds[t][2*kk+1][0], ds[t][2*kk+1][1]), pack(ds[t][2*kk+1][2], ds[t][2*kk+1][3])] for t in range(32)]
        for dp in range(D//16):
            b = sm.ldsm([sK + swz(kk*16 + ((l >> 3) & 1)*8 + (l & 7), dp*2 + (l >> 4)) for l in range(32)], trans=True)
            mma([dq[t][2*dp] for t in range(32)], da, [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
            mma([dq[t][2*dp+1] for t in range(32)], da, [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
    for t in range(32):
        for r in range(2):
            row = w*16 + t//4 + 8*r
            for dn in range(D//8):
                col = dn*8 + (t & 3)*2
                dQg[row][col] = dq[t][dn][2*r]*scale; dQg[row][col+1] = dq[t][dn][2*r+1]*scale
print("dq err", err(dQg, dQ))

# --- dkdv kernel compute
dKg = [[None]*D for _ in range(64)]; dVg = [[None]*D for _ in range(64)]
sL = [lse[i]*log2e for i in range(64)]
for w in range(4):
    p = zeros(8); dk = zeros(D//8); dv = zeros(D//8)
    for kk in range(D//16):
        ka = sm.ldsm([sK + swz(w*16 + (l & 15), kk*2 + (l >> 4)) for l in range(32)])
        for np_ in range(4):
            b = sm.ldsm([sQ + swz(np_*16 + ((l >> 4) << 3) + (l & 7), kk*2 + ((l >> 3) & 1)) for l in range(32)])
            mma([p[t][2*np_] for t in range(32)], ka, [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
            mma([p[t][2*np_+1] for t in range(32)], ka, [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
    for t in range(32):
        for nt in range(8):
            for c in range(4):
                col = nt*8 + (t & 3)*2 + (c & 1)
                p[t][nt][c] = 2 ** (p[t][nt][c]*sl2 - sL[col])
    for kk in range(4):
        pa = [[pack(p[t][2*kk][0], p[t][2*kk][1]), pack(p[t][2*kk][2], p[t][2*kk][3]), pack(p[t][2*kk+1][0], p[t][2*kk+1][1]), pack(p[t][2*kk+1][2], p[t][2*kk+1][3])] for t in range(32)]
        for dp in range(D//16):
            b = sm.ldsm([sO + swz(kk*16 + ((l >> 3) & 1)*8 + (l & 7), dp*2 + (l >> 4)) for l in range(32)], trans=True)
            mma([dv[t][2*dp] for t in range(32)], pa, [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
            mma([dv[t][2*dp+1] for t in range(32)], pa, [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
    ds = zeros(8)
    for kk in range(D//16):
        va = sm.ldsm([sV + swz(w*16 + (l & 15), kk*2 + (l >> 4)) for l in range(32)])
        for np_ in range(4):
            b = sm.ldsm([sO + swz(np_*16 + ((l >> 4) << 3) + (l & 7), kk*2 + ((l >> 3) & 1)) for l in range(32)])
            mma([ds[t][2*np_] for t in range(32)], va, [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
            mma([ds[t][2*np_+1] for t in range(32)], va, [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
    for t in range(32):
        for nt in range(8):
            for c in range(4):
                ds[t][nt][c] = p[t][nt][c] * (ds[t][nt][c] - delta[nt*8 + (t & 3)*2 + (c & 1)])
    for kk in range(4):
        da = [[pack(ds[t][2*kk][0], ds[t][2*kk][1]), pack(ds[t][2*kk][2], ds[t][2*kk][3]), pack(ds[t][2*kk+1][0], ds[t][2*kk+1][1]), pack(ds[t][2*kk+1][2], ds[t][2*kk+1][3])] for t in range(32)]
        for dp in range(D//16):
            b = sm.ldsm([sQ + swz(kk*16 + ((l >> 3) & 1)*8 + (l & 7), dp*2 + (l >> 4)) for l in range(32)], trans=True)
            mma([dk[t][2*dp] for t in range(32)], da, [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
            mma([dk[t][2*dp+1] for t in range(32)], da, [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
    for t in range(32):
        for r in range(2):
            row = w*16 + t//4 + 8*r
            for dn in range(D//8):
                col = dn*8 + (t & 3)*2
                dKg[row][col] = dk[t][dn][2*r]*scale; dKg[row][col+1] = dk[t][dn][2*r+1]*scale
                dVg[row][col] = dv[t][dn][2*r]; dVg[row][col+1] = dv[t][dn][2*r+1]
print("dk err", err(dKg, dK), "dv err", err(dVg, dV))

# --- forward over several key tiles with per-element masking (the online-softmax rescaling, the
# partial-tile mask and a row that sees no key at all), as the kernel's main loop does it
def fwd_multi(tiles, visible):
    """tiles: list of (K, V, full); visible(i, j_global) for partial tiles. Returns O, LSE (natural log)."""
    Og = [[0.0]*D for _ in range(64)]; Lg = [None]*64
    for w in range(4):
        qf = [sm.ldsm([sQ + swz(w*16 + (l & 15), kk*2 + (l >> 4)) for l in range(32)]) for kk in range(D//16)]
        o = zeros(D//8); m = [[-math.inf]*2 for _ in range(32)]; lsum = [[0.0]*2 for _ in range(32)]
        for ti, (Kt, Vt, full) in enumerate(tiles):
            sm.load_tile(sK, Kt); sm.load_tile(sV, Vt)
            s = zeros(8)
            for kk in range(D//16):
                for np_ in range(4):
                    b = sm.ldsm([sK + swz(np_*16 + ((l >> 4) << 3) + (l & 7), kk*2 + ((l >> 3) & 1)) for l in range(32)])
                    mma([s[t][2*np_] for t in range(32)], qf[kk], [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
                    mma([s[t][2*np_+1] for t in range(32)], qf[kk], [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
            if not full:
                for t in range(32):
                    for nt in range(8):
                        for c in range(4):
                            row = w*16 + t//4 + 8*(c >> 1); key = nt*8 + (t & 3)*2 + (c & 1)
                            if not visible(row, ti*64 + key):
                                s[t][nt][c] = -math.inf
            for r in range(2):
                mxs = [max(max(s[t][nt][2*r], s[t][nt][2*r+1]) for nt in range(8)) for t in range(32)]
                for t in range(32):
                    mx = max(mxs[tt] for tt in range(32) if tt//4 == t//4)
                    m_new = max(m[t][r], mx*sl2 if mx != -math.inf else -math.inf)
                    base = 0.0 if m_new == -math.inf else m_new
                    corr = 2 ** (m[t][r] - base) if m[t][r] != -math.inf else 0.0
                    sm_ = 0.0
                    for nt in range(8):
                        for c in (2*r, 2*r+1):
                            s[t][nt][c] = 2 ** (s[t][nt][c]*sl2 - base) if s[t][nt][c] != -math.inf else 0.0
                            sm_ += s[t][nt][c]
                    lsum[t][r] = lsum[t][r]*corr + sm_; m[t][r] = m_new
                    for dn in range(D//8):
                        o[t][dn][2*r] *= corr; o[t][dn][2*r+1] *= corr
            for kk in range(4):
                pa = [[pack(s[t][2*kk][0], s[t][2*kk][1]), pack(s[t][2*kk][2], s[t][2*kk][3]), pack(s[t][2*kk+1][0], s[t][2*kk+1][1]), pack(s[t][2*kk+1][2], s[t][2*kk+1][3])] for t in range(32)]
                for dp in range(D//16):
                    b = sm.ldsm([sV + swz(kk*16 + ((l >> 3) & 1)*8 + (l & 7), dp*2 + (l >> 4)) for l in range(32)], trans=True)
                    mma([o[t][2*dp] for t in range(32)], pa, [b[t][0] for t in range(32)], [b[t][1] for t in range(32)])
                    mma([o[t][2*dp+1] for t in range(32)], pa, [b[t][2] for t in range(32)], [b[t][3] for t in range(32)])
        for t in range(32):
            for r in range(2):
                l = sum(lsum[tt][r] for tt in range(32) if tt//4 == t//4)
                row = w*16 + t//4 + 8*r
                inv = 1/l if l > 0 else 0.0
                for dn in range(D//8):
                    col = dn*8 + (t & 3)*2
                    Og[row][col] = o[t][dn][2*r]*inv; Og[row][col+1] = o[t][dn][2*r+1]*inv
                Lg[row] = (m[t][r] + math.log2(l)) * 0.6931471805599453 if l > 0 else -math.inf
    return Og, Lg

# three key tiles at positions 0..191 for queries at positions 64..127 (row i -> position 64 + i),
# causal, plus row 5 seeing nothing: tile 0 full, tile 1 partial (diagonal), tile 2 partial (empty but listed)
Ks = [rnd(64, D) for _ in range(3)]; Vs = [rnd(64, D) for _ in range(3)]
vis = lambda i, j: i != 5 and j <= 64 + i
Om, Lm = fwd_multi([(Ks[0], Vs[0], False), (Ks[1], Vs[1], False), (Ks[2], Vs[2], False)], vis)
Kall = Ks[0] + Ks[1] + Ks[2]; Vall = Vs[0] + Vs[1] + Vs[2]
worst_multi = 0.0
for i in range(64):
    keys = [j for j in range(192) if vis(i, j)]
    if not keys:
        worst_multi = max(worst_multi, 0.0 if (Lm[i] == -math.inf and all(x == 0.0 for x in Om[i])) else 1.0)
        continue
    sc = [sum(Q[i][d]*Kall[j][d] for d in range(D))*scale for j in keys]
    mx = max(sc); L = mx + math.log(sum(math.exp(x - mx) for x in sc))
    want = [sum(math.exp(sc[n] - L)*Vall[j][d] for n, j in enumerate(keys)) for d in range(D)]
    worst_multi = max(worst_multi, abs(Lm[i] - L), max(abs(Om[i][d] - want[d]) for d in range(D)))
print("fwd over 3 masked tiles err", worst_multi)
worst = max(worst_multi, err(Og, O), max(abs(Lg[i] - lse[i]) for i in range(64)), err(dQg, dQ), err(dKg, dK), err(dVg, dV))
sys.exit(0 if worst < 1e-9 else 1)
