# hierarchical NAS-Bench-201 (Schrodi et al., "Construction of Hierarchical Neural
# Architecture Search Spaces based on Context-free Grammars", NeurIPS 2023), the
# grammar of the paper's code (hierarchical_nb201/grammars: macro.cfg,
# cell_flexible.cfg, conv_block.cfg), one rule per nonterminal:
#
#   D2 d2   D1 d1   D0 d0   DOWN down   C block   CELL cell   OPS ops
#   CONVBLOCK conv_block   ACT activation   CONV convolution   NORM normalisation
#
# A topological operator becomes the network it stands for; its arguments sit on the
# edges of its graph in the paper's order: LinearN is a sequence; Residual2 a b c
# (edges 1-2, 1-3, 2-3) is add(a c, b); Residual3 a b c d (edges 1-2, 2-3, 1-4, 3-4)
# is add(a b d, c); Cell is the NAS-Bench-201 cell, its edges 1-2, 1-3, 2-3, 1-4, 2-4,
# 3-4 are e01, e02, e12, e03, e13, e23 here. Alternatives are labelled by their
# operator, d2's by their parts (`d2=d1_d1_d0_d0(...)` in a derivation). Every
# edge keeps the channels except resBlock, NAS-Bench-201's stride-2 basic block, which
# doubles them; every derivation of d2 has two, so the head sees 4 * C channels.
#
# The zero rule. The paper's sampler offers `zero` on a cell edge only if the cell
# keeps a path from its input to its output. Here every edge has a flag, op or zero,
# bound by `where`, and a `require` keeps the flag combinations with one of the four
# input-output paths; the edge is `zero` or one of the four other alternatives of OPS.
# So derivations correspond one to one with the grammar's, and no disconnected cell
# is ever derived. `connected` (default true: what the paper searches, and what its
# code's counter means to count) switches the rule off, which gives the plain grammar.
#
# Counts (tests/test_hnb201.py recomputes them from the grammar's productions):
#   connected=true   1.23746e446 (10^446.0925)  the default
#   connected=false  1.23829e446 (10^446.0928)  the plain context-free grammar
# Both are the published size, about 10^446: the grammar lists the conv block twice
# (`Linear1 CONVBLOCK | Linear1 CONVBLOCK`, so per-choice sampling picks it with 2/5),
# and the count takes both, 3 + 2 * 27 = 57 derivations per edge. Counted once, an edge
# has 30 distinct operations (30**6 = 729,000,000 cells) and the space 7.02937e375
# distinct derivations (10^375.85; 6.99702e375 connected). A few of those build the same
# network, since sequences of cells associate (`Linear3 C C DOWN` with two 3-cell C's and
# `Linear4 C C C DOWN` with three 2-cell C's are both six cells then DOWN): as graphs
# whose edges carry their operation, there are fewer by a factor of 1 - 4.46e-9 only.
#
# Per-choice sampling weighs each flag `op` 4 : `zero` 1, as OPS's five alternatives
# are; the flags of a cell are drawn together among the allowed combinations, where the
# paper draws edge after edge and drops `zero` where it would disconnect the cell.
#
# Deviation: the paper's `layer` norm is torch's LayerNorm over (C, H, W) with an
# elementwise affine (2 * C * H * W parameters); `layernorm` normalises over the same
# axes with a per-channel affine (2 * C).
space hnb201(C: int = 16, num_classes: int = 10, in_channels: int = 3, resolution: int = 32,
             connected: bool = true)

# The stem (3x3 conv, BN), resBlock and the head (BN, ReLU, pooling, linear) are
# NAS-Bench-201's, and so are the paper's.
from "nb201.nas" import stem, head, resblock

network = stem(C) d2(C) head(num_classes)
    require C >= 1
    require num_classes >= 1
    require in_channels >= 1
    require resolution >= 4 and resolution % 4 == 0

d2(c) = d1(c) d1(2 * c) d0(4 * c)
      | d0(c) d1(c) d1(2 * c)
      | d1(c) d1(2 * c) d0(4 * c) d0(4 * c)

d1(c) = linear3: block(c) block(c) down(c)
      | linear4: block(c) block(c) block(c) down(c)
      | residual3: add(block(c) block(c) down(c), down(c))

d0(c) = linear3: block(c) block(c) cell(c)
      | linear4: block(c) block(c) block(c) cell(c)
      | residual3: add(block(c) block(c) cell(c), cell(c))

down(c) = linear2: cell(c) resblock(2 * c)
        | linear3: cell(c) cell(c) resblock(2 * c)
        | residual2: add(cell(c) resblock(2 * c), resblock(2 * c))

block(c) = linear2: cell(c) cell(c)
         | linear3: cell(c) cell(c) cell(c)
         | residual2: add(cell(c) cell(c), cell(c))

# Node j sums one edge from every earlier node; the four paths from x0 to x3 are
# 0-3, 0-1-3, 0-2-3 and 0-1-2-3.
cell(c) = dag x0 {
    x1 = x0 > (if e01 == op then ops(c) else zero)
    x2 = add(x0 > (if e02 == op then ops(c) else zero), x1 > (if e12 == op then ops(c) else zero))
    x3 = add(x0 > (if e03 == op then ops(c) else zero), x1 > (if e13 == op then ops(c) else zero),
             x2 > (if e23 == op then ops(c) else zero))
    out x3
}
    where e01 = {op @ 4, zero}, e02 = {op @ 4, zero}, e12 = {op @ 4, zero},
          e03 = {op @ 4, zero}, e13 = {op @ 4, zero}, e23 = {op @ 4, zero}
    require not connected
            or e03 == op
            or e01 == op and e13 == op
            or e02 == op and e23 == op
            or e01 == op and e12 == op and e23 == op

# OPS but its `zero` (the edge's flag): the conv block twice, as published.
ops(c) = id: identity
       | conv_block(c)
       | conv_block(c)
       | avg_pool: avgpool(kernel=3)

conv_block(c) = activation convolution(c) normalisation
activation = relu | hardswish: hswish | mish
convolution(c) = conv3x3: conv(out=c, kernel=3) | conv1x1: conv(out=c, kernel=1) | dconv3x3: dwconv(kernel=3)
normalisation = batch: bn | instance: instancenorm | layer: layernorm
