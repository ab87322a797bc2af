#!/usr/bin/env python3
"""Compiler resource report of the kernels (registers, spills, stack, static shared memory per kernel
and architecture) from `nvcc -Xptxas -v`, as markdown on stdout. Dynamic shared memory is set at
launch and listed from the source (kernels/README.md). Usage: scripts/gpu/resource_report.py [nvcc]"""
import re
import subprocess
import sys

ROOT = __file__.rsplit("/scripts/", 1)[0]
NVCC = sys.argv[1] if len(sys.argv) > 1 else "/usr/local/cuda/bin/nvcc"
SOURCES = ["attention_fwd_mma.cu", "attention_bwd_mma.cu", "attention_fwd_wgmma.cu", "attention_bwd_wgmma.cu",
           "attention_reference.cu", "merge_gather.cu"]
FLAGS = ["-I" + ROOT + "/kernels/include", "-I" + ROOT + "/model/include", "-O2", "-DNDEBUG", "-std=c++17",
         "--expt-relaxed-constexpr", "--generate-code=arch=compute_80,code=sm_80",
         "--generate-code=arch=compute_90a,code=sm_90a", "-Xptxas", "-v", "-x", "cu", "-c", "-o", "/dev/null"]


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    short = []
    for n in out:
        n = re.sub(r"cpsim::kernels::(detail::)?\(anonymous namespace\)::", "", n)
        n = re.sub(r"\(cpsim::kernels::AttnArgs.*|\(char\*.*|\(cpsim::kernels::\(anonymous namespace\)::MergeParams\)", "", n)
        short.append(n.replace("__nv_bfloat16", "bf16").replace("__half", "fp16"))
    return short


def main():
    version = subprocess.run([NVCC, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    print("| source | kernel | arch | registers | spill stores / loads (bytes) | stack (bytes) | static smem (bytes) |")
    print("|---|---|---|---|---|---|---|")
    warnings = []
    for src in SOURCES:
        r = subprocess.run([NVCC] + FLAGS + [ROOT + "/kernels/src/" + src], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(r.stderr)
        rows, cur = [], None
        for line in r.stderr.splitlines():
            m = re.search(r"Compiling entry function '(\S+)' for '(sm_\w+)'", line)
            if m:
                cur = {"name": m.group(1), "arch": m.group(2), "regs": "?", "spill": "0 / 0", "stack": "0", "smem": "0"}
                rows.append(cur)
                continue
            if cur is None:
                continue
            m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m:
                cur["stack"], cur["spill"] = m.group(1), f"{m.group(2)} / {m.group(3)}"
            m = re.search(r"Used (\d+) registers", line)
            if m:
                cur["regs"] = m.group(1)
            m = re.search(r"(\d+) bytes smem", line)
            if m:
                cur["smem"] = m.group(1)
        for line in r.stderr.splitlines():
            if "C7515" in line:  # wgmma serialized by the compiler: a performance bug worth seeing in the report
                warnings.append(f"{src}: {line.strip()}")
        for row, name in zip(rows, demangle([x["name"] for x in rows])):
            if "wgmma" in name and row["arch"] == "sm_80":
                continue  # the wgmma kernels compile to a trap outside sm_90a
            print(f"| {src} | `{name}` | {row['arch']} | {row['regs']} | {row['spill']} | {row['stack']} | {row['smem']} |")
    print(f"\n{version}; flags: {' '.join(FLAGS[2:])}")
    print("\nwgmma serialization warnings (ptxas C7515): " + ("none" if not warnings else ""))
    for w in warnings:
        print(f"- {w}")


if __name__ == "__main__":
    main()
