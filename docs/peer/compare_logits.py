#!/usr/bin/env python3
"""Compares two NAME.logits.txt files (and optionally two NAME.greedy.txt files).

    compare_logits.py A.logits.txt B.logits.txt [A.greedy.txt B.greedy.txt]

Prints: identical (text) or not, max |a - b| over all positions and the whole vocabulary,
relative RMS error sqrt(sum (a-b)^2 / sum b^2) (B is the reference), how many rows' argmax differ,
the range of B's logits, and whether the greedy lines are the same. EdgeLLM's own tool.
"""

import sys

import numpy as np


def load(path):
    with open(path) as f:
        return [line.rstrip("\n") for line in f]


def main():
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__)
    ta, tb = load(sys.argv[1]), load(sys.argv[2])
    a = np.array([[float(x) for x in l.split(" ")] for l in ta])
    b = np.array([[float(x) for x in l.split(" ")] for l in tb])
    if a.shape != b.shape:
        sys.exit(f"shapes differ: {a.shape} vs {b.shape}")
    d = np.abs(a - b)
    rel = np.sqrt((d ** 2).sum() / (b ** 2).sum())
    rows_same = sum(1 for x, y in zip(ta, tb) if x == y)
    argmax_diff = int((a.argmax(axis=1) != b.argmax(axis=1)).sum())
    print(f"text identical: {ta == tb} ({rows_same}/{len(tb)} rows identical)")
    print(f"max |a-b| = {d.max():.4g}  rel RMS = {rel:.3g}  argmax differs in {argmax_diff}/{len(tb)} rows  "
          f"reference logits in [{b.min():.4g}, {b.max():.4g}]")
    if len(sys.argv) == 5:
        ga, gb = load(sys.argv[3]), load(sys.argv[4])
        print(f"greedy identical: {ga == gb}" + ("" if ga == gb else f"\n  a: {ga[0]}\n  b: {gb[0]}"))


if __name__ == "__main__":
    main()
