# RegNet (Radosavovic et al., "Designing Network Design Spaces", CVPR 2020): the RegNetX
# and RegNetY design spaces, in torchvision's layout. A network is a stem (3x3/2 conv, 32
# channels), four stages of residual bottleneck blocks (the first of each with stride 2)
# and a classifier. Six numbers make one:
#
#   d   depth (blocks)        w0  initial width        wa  slope
#   wm  width multiplier      g   group width          b   bottleneck ratio
#
# Block j (0 <= j < d) gets the width u_j = w0 + wa * j, quantised in log space:
# s_j = round(log(u_j / w0) / log(wm)) and w_j = w0 * wm ** s_j rounded to a multiple of
# 8. A stage is a run of blocks of equal width. Written per stage, which is what this file
# does: stage i (1..4) holds the blocks with s_j = i - 1, so its width is
# q_i = round(w0 * wm ** (i - 1) / 8) * 8, and since s_j <= i - 1 exactly when (ties aside)
# u_j < w0 * wm ** (i - 1/2), it ends before block e_i = ceil(w0 * (wm ** (i - 0.5) - 1) / wa).
# (Written per block, as a recursive rule over j, it would read closer to the paper but
# count about a hundred times slower: every combination would plan every block.) Each
# stage width is then made to fit g and b as torchvision does: the bottleneck width
# q_i / b is rounded to a multiple of min(g, q_i / b) (make_divisible), which is the group
# width used.
#
# The ranges. The paper's RegNet draws d < 64, w0 < 256, 0 < wa < 256, 1.5 <= wm <= 3,
# b in {1, 2, 4}, g in {1, 2, 4, 8, 16, 32}; RegNetX narrows it to b = 1, d <= 40 and
# wm >= 2, and RegNetY is RegNetX with squeeze-excitation. Here:
#
#   variant  x or y (a parameter): y adds SE after the 3x3 conv, squeezing to a quarter
#            of the block's input width, as torchvision does
#   b        1 (a parameter; 2 and 4 are the paper's other ratios)
#   d        up to 40, and such that there are exactly four stages: stage i is the width
#            level i - 1, as in every published RegNet (all fifteen in torchvision)
#   g        the paper's {1, 2, 4, 8, 16, 32}
#   w0, wa, wm   the paper's draws are real numbers, so a countable space needs finite
#            sets. nasdsl counts exactly, planning every combination (the stage structure
#            depends on all of them), so the sets are coarse, about 20,000 networks:
#            w0 and wa double from 16 and 8 to 128, wm steps by 0.2 from 2 to 3, plus the
#            values of torchvision's 400MF models (w0 24, 48; wa 24.48, 27.89; wm 2.09,
#            2.54) so that they are members. No wm has a rational square root (2.25, 2.56):
#            with those a block can sit exactly on a rounding boundary, where float32
#            (torchvision) and float64 (nasdsl) decide differently.
#
# The presets are torchvision's regnet_x_400mf and regnet_y_400mf exactly (parameters,
# MACs, and torchvision's weights load through nasdsl.compat.torchvision and give the same
# logits); tests/test_regnet.py checks that, and that sampled members are torchvision's
# RegNet for their six numbers.
space regnet(variant: str = "x", b: int = 1, num_classes: int = 1000, in_channels: int = 3,
             resolution: int = 224)

network = stem
          stage(32, w1, g1, e1) stage(w1, w2, g2, e2 - e1) stage(w2, w3, g3, e3 - e2)
          stage4(w3, w4, g4, e3, e4)
          head(num_classes)
    where w0 = {16, 24, 32, 48, 64, 128}, wa = {8, 16, 24.48, 27.89, 32, 64, 128},
          wm = {2.0, 2.09, 2.2, 2.4, 2.54, 2.6, 2.8, 3.0},
          # the quantised stage widths, and the block before which each stage ends (d <= 40)
          q1 = w0, q2 = round(w0 * wm / 8) * 8, q3 = round(w0 * wm ** 2 / 8) * 8, q4 = round(w0 * wm ** 3 / 8) * 8,
          e1 = ceil(w0 * (wm ** 0.5 - 1) / wa), e2 = ceil(w0 * (wm ** 1.5 - 1) / wa),
          e3 = ceil(w0 * (wm ** 2.5 - 1) / wa), e4 = min(40, ceil(w0 * (wm ** 3.5 - 1) / wa)),
          g = {1, 2, 4, 8, 16, 32},
          # torchvision's fit of each stage's width w_i and group width g_i to g and b
          g1 = min(g, q1 // b), g2 = min(g, q2 // b), g3 = min(g, q3 // b), g4 = min(g, q4 // b),
          w1 = make_divisible(q1 // b, g1) * b, w2 = make_divisible(q2 // b, g2) * b,
          w3 = make_divisible(q3 // b, g3) * b, w4 = make_divisible(q4 // b, g4) * b
    # four stages, none empty; the last may end at any block from e3 + 1 to e4 (the depth d)
    require e1 < e2 and e2 < e3 and e3 < e4
    require variant == "x" or variant == "y"
    require b == 1 or b == 2 or b == 4
    require num_classes >= 1
    require in_channels >= 1
    require resolution >= 1

# Any resolution >= 1 works: every stride-2 conv (the stem, the 3x3 and the 1x1 projection
# of each stage's first block) makes a side n into ceil(n / 2), never 0, and the two
# branches of a block agree. Below 32 (the total stride) the last maps are 1x1.
stem = conv(out=32, kernel=3, stride=2) bn relu
head(n) = gap flatten linear(n)

stage(c_in, w, g, n) = block(c_in, w, 2, g) block(w, w, 1, g) * (n - 1) as rest

# The last stage runs from block e3 to the depth d, which is chosen here.
stage4(c_in, w, g, e3, e4) = block(c_in, w, 2, g) block(w, w, 1, g) * (d - e3 - 1) as rest
    where d = e3 + 1 .. e4

# torchvision's ResBottleneckBlock: the shortcut (a 1x1 projection where the shape changes,
# run first, as torchvision does), plus F(x), then relu.
block(c_in, w, s, g) = add(shortcut(c_in, w, s), f(c_in, w, s, g, w // b)) relu
shortcut(c_in, w, s) = if s == 1 and c_in == w then identity else (conv_bn(w, 1, s) as proj)

# F: 1x1 to the bottleneck width wb, 3x3 grouped conv of group width g (stride s), SE for
# RegNetY, 1x1 back to w. The grouped conv needs g to divide wb; the widths in `network`
# are made to fit, so this holds for every member.
f(c_in, w, s, g, wb) = (conv_bn_relu(wb, 1, 1) as a)
                       (conv_bn_relu(wb, 3, s, wb // g) as b)
                       (if variant == "y" then se(squeeze=round(0.25 * c_in), gate=sigmoid) else identity)
                       (conv_bn(w, 1, 1) as c)
    require wb % g == 0

conv_bn(c, k, s, groups = 1) = conv(out=c, kernel=k, stride=s, groups=groups) bn
conv_bn_relu(c, k, s, groups = 1) = conv(out=c, kernel=k, stride=s, groups=groups) bn relu

# torchvision.models.regnet_x_400mf(): d=22, w0=24, wa=24.48, wm=2.54, g=16.
preset regnetx_400mf(variant="x") = (w0=24, wa=24.48, wm=2.54, g=16, stage4=(d=22))

# torchvision.models.regnet_y_400mf(): d=16, w0=48, wa=27.89, wm=2.09, g=8, SE.
preset regnety_400mf(variant="y") = (w0=48, wa=27.89, wm=2.09, g=8, stage4=(d=16))
