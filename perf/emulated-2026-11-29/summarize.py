#!/usr/bin/env python3
"""Summarise ptx-emu profiles (the <preset>-t<tokens>.json.xz files beside this script) as the table of
perf/emulated-2026-11-29.md. Usage: python3 summarize.py [DIR]"""
import json, lzma, os, sys

d = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
order = ["olmoe-1b-7b", "qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v3", "gpt-oss-120b"]
def pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"
print("| preset | tokens | kernel | launches | warp instr | warp eff. | instr/mma | global eff. | bytes moved per byte used | shared wavefronts / ideal |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for p in order:
    for t in (1, 16):
        f = os.path.join(d, f"{p}-t{t}.json.xz")
        if not os.path.exists(f):
            continue
        ks = json.load(lzma.open(f))["kernels"]
        for name, k in sorted(ks.items()):
            ipm = k["instructions_per_mma"]
            moved, used = k["global_bytes_moved"], k["global_bytes_requested"]
            print(f"| {p} | {t} | {name} | {k['launches']} | {k['warp_instructions']} | "
                  f"{pct(k['warp_execution_efficiency'])} | {'-' if ipm is None else f'{ipm:.1f}'} | "
                  f"{pct(k['global_efficiency'])} | {moved / used if used else 0:.2f} | "
                  f"{k['shared_wavefronts']} / {k['shared_wavefronts_ideal']} |")
