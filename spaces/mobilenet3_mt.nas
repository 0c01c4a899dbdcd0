# MobileNet3-MT, the enlarged MobileNetV3 space of MENAS (Wei et al., "Multi-trial Neural
# Architecture Search with Lottery Tickets", arXiv 2203.04300).
#
# The paper says only that MobileNet3-MT is a MobileNetV3-style space with less human
# prior "in omni dimensions"; its body (the search-space table) is not public. This file
# is nasdsl's reading of it, as decided in the design note (shared/design/menas.md,
# "Our interpretation"); every set of candidates below is therefore our choice, not the
# paper's. The aim behind the grain: MENAS replaces each trained model by its channel-
# pruned "lottery ticket", and the pruned network must again be a derivation of this
# space, so every width a pruner can leave (a multiple of 8) is offered.
#
#   skeleton    MobileNetV3-Large (Howard et al. 2019, Table 1): stem conv, six stages with
#               Large's strides and base output widths 16, 24, 40, 80, 112, 160, then the
#               960 -> 1280 head and the classifier (torchvision's layer order)
#   per block   kernel 3, 5 or 7; squeeze-excitation off or on; activation relu or hswish;
#               hidden (expanded) width: every multiple of 8 from 8 up to 6x the block's
#               input width, or 0 = no expansion conv (our addition: MobileNetV3-Large's
#               first block has none; an expansion conv pruned to exactly the input width
#               stays an expansion conv, so "none" needs its own value)
#   per stage   depth 1..max_depth blocks (1..5); output width: every multiple of 8 from
#               0.5x to 1.5x the base width (bounds rounded inward: 24 gives 16..32; at
#               least 8), shared by the stage's blocks (their residual adds couple them)
#   stem, head  the stem conv's width and the head's two widths (960 conv, 1280 linear):
#               every multiple of 8 from 0.5x to 1.5x of MobileNetV3-Large's value
#
# `width` scales every base width (the ranges are then taken around base * width) and
# `max_depth` bounds the blocks per stage; at width 1.0 and max_depth 5 the space is the
# note's. Planning time grows with the square of `width` (about 4x at 2.0).
#
# What a pruned network must keep to be a derivation: multiple-of-8 widths inside the
# ranges above, and each hidden width at most 6x its block's (possibly pruned) input
# width. The squeeze-excitation width is not a choice: make_divisible(hidden // 4, 8),
# as in torchvision; nasdsl.groups.prune leaves an SE block's inner width as it was, so
# a pruned SE block matches its derivation only where that formula gives the same
# width (otherwise the SE weights must be sliced to it).
#
# Resolution. At 64 pixels and more the strides are Large's (stem 2; stages 1, 2, 2, 2,
# 1, 2: total stride 32). Below 64 (CIFAR's 32, Fashion-MNIST's 28) the stem and the
# second stage keep stride 1, as CIFAR versions of MobileNets do, so the total stride is
# 8 and 28x28 runs at 28, 28, 28, 14, 7, 7, 4 pixels instead of shrinking to 1x1.
#
# Writing note: a stage's first block needs the previous stage's chosen width (its
# hidden range and its residual depend on it), and a choice is visible only inside the
# rule that makes it, so the stages are a chain: stage i chooses its width, then derives
# stage i + 1. Stage 3's second block is at `stage.stage.stage.rest.0`.
space mobilenet3_mt(num_classes: int = 1000, in_channels: int = 3, resolution: int = 224,
                    width: float = 1.0, max_depth: int = 5, dropout: float = 0.2)

from "mobilenetv3.nas" import conv_bn_act, project

network = (conv_bn_act(stem_channels, 3, stride, hswish) as stem) stage(1, stem_channels) head
    where stride = if resolution < 64 then 1 else 2,
          lo = max(8, 8 * ceil(16 * width / 16)), hi = max(lo, 8 * floor(3 * 16 * width / 16)),
          stem_channels = lo..hi step 8
    require num_classes >= 1
    require in_channels >= 1
    require resolution >= 8  # the total stride is at least 8; below it the last stages see 1x1 maps
    require width > 0
    require max_depth >= 1
    require dropout >= 0 and dropout < 1

# Stage i of Table 1 (base width, first stride), then the rest of the chain.
stage(i, c_in) = block(c_in, channels, s) block(channels, channels, 1) * 0..(max_depth - 1) as rest
                 (if i < 6 then stage(i + 1, channels) else identity)
    where base = if i == 1 then 16 else if i == 2 then 24 else if i == 3 then 40
                 else if i == 4 then 80 else if i == 5 then 112 else 160,
          s = if i == 1 or i == 5 then 1 else if i == 2 and resolution < 64 then 1 else 2,
          lo = max(8, 8 * ceil(base * width / 16)), hi = max(lo, 8 * floor(3 * base * width / 16)),
          channels = lo..hi step 8

# One inverted-residual block; the residual wherever the stride is 1 and the widths
# agree (output + input, torchvision's order). The block's choices are made in `mbconv`,
# whose arguments leave out the output width c, so each (input width, stride) is
# enumerated once, not once per output width.
block(c_in, c, s) = if s == 1 and c_in == c
                    then add(mbconv(c_in, s) project(c), identity)
                    else (mbconv(c_in, s) project(c))

# torchvision's InvertedResidual without its projection: 1x1 expansion to `hidden`
# channels (none when hidden is 0: the depthwise conv then runs on the input's c_in
# channels), depthwise kxk with stride s, squeeze-excitation. mobilenetv3.nas's `bneck`
# drops the expansion when its width equals the input width, which would leave a pruned
# expansion conv of exactly c_in channels unrepresentable, hence this rule; its parts
# are mobilenetv3.nas's. The kernel is chosen in `depthwise`, so that it is not
# enumerated together with the hidden width (planning stays fast).
mbconv(c_in, s) = (if hidden == 0 then identity else (conv_bn_act(hidden, 1, 1, nl) as expand))
                  depthwise(h, s, nl)
                  (if use_se then se(squeeze=make_divisible(h // 4, 8)) else identity)
    where hidden = 0..6 * c_in step 8, use_se = {false, true}, nl = {relu, hswish},
          h = if hidden == 0 then c_in else hidden

# mobilenetv3.nas's conv_bn_act with groups = channels, written out to own the choice.
depthwise(c, s, nl) = conv(out=c, kernel=kernel, stride=s, groups=c) bn(eps=0.001, momentum=0.01) act(kind=nl)
    where kernel = {3, 5, 7}

# The last 1x1 conv (960 in Large), pooling, then linear (1280 in Large), hswish,
# dropout and the classifier; each width in its own rule, so the two ranges are not
# enumerated together.
head = last_conv gap flatten classifier
last_conv = conv_bn_act(channels, 1, 1, hswish)
    where lo = max(8, 8 * ceil(960 * width / 16)), hi = max(lo, 8 * floor(3 * 960 * width / 16)),
          channels = lo..hi step 8
classifier = linear(channels) hswish dropout(p=dropout) linear(num_classes)
    where lo = max(8, 8 * ceil(1280 * width / 16)), hi = max(lo, 8 * floor(3 * 1280 * width / 16)),
          channels = lo..hi step 8

# MobileNetV3-Large's own choices (Table 1 row by row): at the default parameters this is
# torchvision's mobilenet_v3_large (tests/test_mobilenet3_mt.py checks params and MACs).
preset mobilenet_v3_large = (stem_channels=16,
    stage=(channels=16, block=(mbconv=(hidden=0, use_se=false, nl=relu, depthwise=(kernel=3))), rest=[],
    stage=(channels=24, block=(mbconv=(hidden=64, use_se=false, nl=relu, depthwise=(kernel=3))),
           rest=[(mbconv=(hidden=72, use_se=false, nl=relu, depthwise=(kernel=3)))],
    stage=(channels=40, block=(mbconv=(hidden=72, use_se=true, nl=relu, depthwise=(kernel=5))),
           rest=[(mbconv=(hidden=120, use_se=true, nl=relu, depthwise=(kernel=5))),
                 (mbconv=(hidden=120, use_se=true, nl=relu, depthwise=(kernel=5)))],
    stage=(channels=80, block=(mbconv=(hidden=240, use_se=false, nl=hswish, depthwise=(kernel=3))),
           rest=[(mbconv=(hidden=200, use_se=false, nl=hswish, depthwise=(kernel=3))),
                 (mbconv=(hidden=184, use_se=false, nl=hswish, depthwise=(kernel=3))),
                 (mbconv=(hidden=184, use_se=false, nl=hswish, depthwise=(kernel=3)))],
    stage=(channels=112, block=(mbconv=(hidden=480, use_se=true, nl=hswish, depthwise=(kernel=3))),
           rest=[(mbconv=(hidden=672, use_se=true, nl=hswish, depthwise=(kernel=3)))],
    stage=(channels=160, block=(mbconv=(hidden=672, use_se=true, nl=hswish, depthwise=(kernel=5))),
           rest=[(mbconv=(hidden=960, use_se=true, nl=hswish, depthwise=(kernel=5))),
                 (mbconv=(hidden=960, use_se=true, nl=hswish, depthwise=(kernel=5)))])))))),
    head=(last_conv=(channels=960), classifier=(channels=1280)))
