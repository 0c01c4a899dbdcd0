# NAS-Bench-201 (Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible
# Neural Architecture Search", ICLR 2020), the cell search space.
#
# One cell is searched and shared by all 3 x N cell positions. The cell is a DAG of
# 4 nodes; node j sums one operation on every edge i -> j (i < j), so it has 6
# edges with 5 operations each: 5**6 = 15,625 cells.
space nb201(C: int = 16, N: int = 5, num_classes: int = 10)

# The parameters' own constraints, checked when the space is bound. With N = 0 the
# searched cell would appear nowhere, and every derivation would be the same network.
network = stem(C)
          stage(C) resblock(2 * C) stage(2 * C) resblock(4 * C) stage(4 * C)
          head(num_classes)
    require C >= 1
    require N >= 1
    require num_classes >= 1

stem(c)  = conv(out=c, kernel=3) bn
stage(c) = cell(c) * N
head(n)  = bn relu gap flatten linear(n)

shared cell(c) = dag x0 {
    x1 = x0 > op(c)
    x2 = add(x0 > op(c), x1 > op(c))
    x3 = add(x0 > op(c), x1 > op(c), x2 > op(c))
    out x3
}

# The five operations, labelled with the benchmark's own names.
op(c) = none: zero
      | skip_connect: identity
      | nor_conv_1x1: relu_conv_bn(c, 1)
      | nor_conv_3x3: relu_conv_bn(c, 3)
      | avg_pool_3x3: avgpool(kernel=3)

relu_conv_bn(c, k, s = 1) = relu conv(out=c, kernel=k, stride=s) bn

# Between stages: a fixed ResNet basic block with stride 2 (the benchmark's
# ResNetBasicblock: its shortcut is a 2x2 average pool and a 1x1 conv).
resblock(c) = add(relu_conv_bn(c, 3, 2) relu_conv_bn(c, 3),
                  avgpool(kernel=2, stride=2, padding=0) conv(out=c, kernel=1))

# The best cell on CIFAR-10 in the benchmark's table (index 13714):
# |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|
preset best_cifar10 = (cell=(x1=(op=nor_conv_3x3),
                             x2=(op1=nor_conv_3x3, op2=nor_conv_3x3),
                             x3=(op1=skip_connect, op2=nor_conv_3x3, op3=nor_conv_3x3)))
