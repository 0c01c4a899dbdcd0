# A small DARTS-like cell space for bench/oneshot_nni.py, which writes the same space
# again as an NNI 3.0 ModelSpace (bench/peers/nni_random_oneshot.py) to train both
# supernets side by side. 1x28x28 input (Fashion-MNIST).
#
# A stem, then `cells` cells, each with its own choices (none is shared). A cell takes
# the outputs of the two before it (k2, k1; the stem's output twice for the first),
# prepares each with a 1x1 ReLU-conv-BN, and has 3 nodes; a node sums two operations
# applied to an unordered pair of distinct earlier nodes, one of 6 operations per edge;
# the cell's output concatenates its 3 nodes (3 * C channels). Every cell keeps the
# 28x28 resolution. Per cell: (1 * 3 * 6) * 6**6 = 839,808 choices; the space is its cube.
space oneshot_cell(C: int = 16, cells: int = 3, num_classes: int = 10)

network = stem(C) cell(C) * cells last head(num_classes)
    require C >= 1
    require cells >= 1
    require num_classes >= 1

stem(c) = dag x {
    s = x > conv(out=c, kernel=3) bn
    out s, s
}

cell(c) = dag k2, k1 {
    p0 = k2 > relu_conv_bn(c, 1)
    p1 = k1 > relu_conv_bn(c, 1)
    n2 = add(pick 2 of [p0 > op(c), p1 > op(c)])
    n3 = add(pick 2 of [p0 > op(c), p1 > op(c), n2 > op(c)])
    n4 = add(pick 2 of [p0 > op(c), p1 > op(c), n2 > op(c), n3 > op(c)])
    out k1, concat(n2, n3, n4)
}

op(c) = sep_conv_3x3: relu sepconv(out=c, kernel=3) bn
      | conv_3x3: relu_conv_bn(c, 3)
      | conv_5x5: relu_conv_bn(c, 5)
      | max_pool_3x3: maxpool(kernel=3)
      | avg_pool_3x3: avgpool(kernel=3)
      | skip_connect: identity

relu_conv_bn(c, k) = relu conv(out=c, kernel=k) bn

last = dag a, b {
    out b
}
head(n) = gap flatten linear(n)
