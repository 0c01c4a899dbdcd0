# DARTS (Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019),
# the CNN cell space with its CIFAR stem and stacking.
#
# Two cells are searched: a normal cell and a reduction cell, each *shared* by all its
# positions. A cell takes the outputs of the two cells before it (k2, k1), prepares
# each with a 1x1 ReLU-conv-BN (a FactorizedReduce for k2 after a reduction), and has
# 4 intermediate nodes; a node sums two operations applied to an unordered pair of
# distinct earlier nodes, one of the 7 non-zero operations per edge; the cell's output
# concatenates the 4 nodes. In a reduction cell, edges from the cell's inputs have
# stride 2. Per cell: (1 * 3 * 6 * 10) * 7**8 = 1,037,589,180 choices; the space is its square.
space darts(C: int = 16, layers: int = 8, num_classes: int = 10, in_channels: int = 3, resolution: int = 32)

# The parameters' constraints, checked when the space is bound:
#   layers >= 3   cells layers // 3 and 2 * layers // 3 reduce; with fewer than 3 cells
#                 no normal cell is left, and its choices would shape no network.
#   resolution    a multiple of 4: each of the two reductions halves the side, and its
#                 FactorizedReduce (the skip edge, and p0 of the next cell) needs an
#                 even side; 4 is the smallest, ending in 1x1 maps.
# (Odd C is fine: every FactorizedReduce outputs 2 * C or 4 * C channels.)
network = stem(3 * C) cells(0, 3 * C, 3 * C, C, false) last head(num_classes)
    require C >= 1
    require layers >= 3
    require num_classes >= 1
    require in_channels >= 1
    require resolution >= 4 and resolution % 4 == 0

# The stem's output feeds both inputs of the first cell.
stem(c) = dag x {
    s = x > conv(out=c, kernel=3) bn
    out s, s
}

# Cell i of `layers`; cells at 1/3 and 2/3 of the depth reduce and double the width.
cells(i, cpp, cp, c, rp) = if i == layers then keep else (cell_at(r, c2, rp) cells(i + 1, cp, 4 * c2, c2, r))
    where r = i == layers // 3 or i == 2 * layers // 3, c2 = if r then 2 * c else c
cell_at(r, c, rp) = if r then reduce(c, rp) else normal(c, rp)
shared normal(c, rp) = cell(c, 1, rp)
shared reduce(c, rp) = cell(c, 2, rp)

cell(c, s, rp) = dag k2, k1 {
    p0 = k2 > (if rp then fact_reduce(out=c) else relu_conv_bn(c))
    p1 = k1 > relu_conv_bn(c)
    n2 = add(pick 2 of [p0 > edge(c, s), p1 > edge(c, s)])
    n3 = add(pick 2 of [p0 > edge(c, s), p1 > edge(c, s), n2 > edge(c, 1)])
    n4 = add(pick 2 of [p0 > edge(c, s), p1 > edge(c, s), n2 > edge(c, 1), n3 > edge(c, 1)])
    n5 = add(pick 2 of [p0 > edge(c, s), p1 > edge(c, s), n2 > edge(c, 1), n3 > edge(c, 1), n4 > edge(c, 1)])
    out k1, concat(n2, n3, n4, n5)
}

# The 7 operations, with the DARTS code's names.
edge(c, s) = sep_conv_3x3: sep_conv(c, 3, s)
           | sep_conv_5x5: sep_conv(c, 5, s)
           | dil_conv_3x3: dil_conv(c, 3, s)
           | dil_conv_5x5: dil_conv(c, 5, s)
           | max_pool_3x3: maxpool(kernel=3, stride=s)
           | avg_pool_3x3: avgpool(kernel=3, stride=s)
           | skip_connect: (if s == 1 then identity else fact_reduce(out=c))

relu_conv_bn(c) = relu conv(out=c, kernel=1) bn
sep_conv(c, k, s) = relu sepconv(out=c, kernel=k, stride=s) bn relu sepconv(out=c, kernel=k) bn
dil_conv(c, k, s) = relu sepconv(out=c, kernel=k, stride=s, dilation=2) bn

keep = dag a, b {
    out a, b
}
last = dag a, b {
    out b
}
head(n) = gap flatten linear(n)

# The published genotypes (DARTS code, genotypes.py); inputs 0, 1 are p0, p1, and 2, 3, 4 are n2, n3, n4.
preset darts_v1 = (
    normal=(cell=(n2=(pick=[p0(edge=sep_conv_3x3), p1(edge=sep_conv_3x3)]), n3=(pick=[p0(edge=skip_connect), p1(edge=sep_conv_3x3)]),
            n4=(pick=[p0(edge=skip_connect), p1(edge=sep_conv_3x3)]), n5=(pick=[p0(edge=sep_conv_3x3), n2(edge=skip_connect)]))),
    reduce=(cell=(n2=(pick=[p0(edge=max_pool_3x3), p1(edge=max_pool_3x3)]), n3=(pick=[p0(edge=max_pool_3x3), n2(edge=skip_connect)]),
            n4=(pick=[p0(edge=max_pool_3x3), n2(edge=skip_connect)]), n5=(pick=[p0(edge=avg_pool_3x3), n2(edge=skip_connect)]))))
preset darts_v2 = (
    normal=(cell=(n2=(pick=[p0(edge=sep_conv_3x3), p1(edge=sep_conv_3x3)]), n3=(pick=[p0(edge=sep_conv_3x3), p1(edge=sep_conv_3x3)]),
            n4=(pick=[p0(edge=skip_connect), p1(edge=sep_conv_3x3)]), n5=(pick=[p0(edge=skip_connect), n2(edge=dil_conv_3x3)]))),
    reduce=(cell=(n2=(pick=[p0(edge=max_pool_3x3), p1(edge=max_pool_3x3)]), n3=(pick=[p1(edge=max_pool_3x3), n2(edge=skip_connect)]),
            n4=(pick=[p0(edge=max_pool_3x3), n2(edge=skip_connect)]), n5=(pick=[p1(edge=max_pool_3x3), n2(edge=skip_connect)]))))
