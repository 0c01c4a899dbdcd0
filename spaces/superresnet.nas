# SuperResNet, a ResNet super-network for erasing-mode NAS (OTOv3 / H2SPG: Chen et al.,
# "Towards Automatic Neural Architecture Search within General Super-Networks", arXiv
# 2305.18030). The paper names SuperResNet among its super-networks (and reports it on
# CIFAR-10), but its layer table is not available to us (shared/design/otov3_h2spg.md):
# everything below but the idea is our choice.
#
# The idea (from the note): the super-network holds several candidate structures at
# once, their outputs summed; H2SPG trains it and zeroes whole structures, and what is
# left must still be a valid network. A derivation of this space is such a remainder:
#
#   per unit    a non-empty subset of 4 candidate branches, summed with the shortcut,
#               then relu (ResNet's unit with its body replaced by the chosen branches):
#                 basic       two 3x3 convs (ResNet's basic unit)
#                 bottleneck  1x1 down to c/4, 3x3, 1x1 back to c (ResNet's bottleneck,
#                             keeping the unit's width)
#                 sep5        depthwise 5x5 then pointwise 1x1 (a larger receptive field, cheap)
#                 dil3        depthwise 3x3 with dilation 2 then pointwise 1x1
#   per slot    after a stage's first unit, `blocks - 1` slots that hold a unit or `skip`
#               (the unit erased: only its identity shortcut remains, and relu of the
#               previous unit's non-negative output is that output), so depth 1..blocks
#               per stage is searched. Erasing slot 2 or slot 3 gives the same topology
#               but different super-network weights; they count as two derivations, as
#               they are two different sub-networks of the trained super-network.
#   skeleton    ResNet's (He et al. 2016): stem, 4 stages of width C, 2C, 4C, 8C with
#               first strides 1, 2, 2, 2, then pooling and the classifier. A stage's first
#               unit keeps at least one branch (it changes width or stride).
#
# Also our choice: the widths are not searched (C scales them; H2SPG's erasing mode
# removes structures, not channels), and the default depth, blocks = 4 slots per stage,
# is twice ResNet-18's. The super-network itself is the preset `supernet` (every branch,
# no skip); `resnet18` is torchvision's resnet18 (tests/test_superresnet.py checks
# params and MACs). A unit's modules are named by its branches' labels
# (`stage2.rest.0.unit.unit.pick.sep5.sep5.conv`), so a derivation's weights are the
# super-network's of the same names.
#
# Resolution. At 64 pixels and more the stem is ResNet's (7x7/2 conv, 3x3/2 max pool:
# total stride 32). Below 64 (CIFAR's 32, Fashion-MNIST's 28) it is the CIFAR ResNet's
# single 3x3 conv with stride 1, so the total stride is 8 (28 -> 28, 14, 7, 4).
space superresnet(C: int = 64, blocks: int = 4, num_classes: int = 10, in_channels: int = 3,
                  resolution: int = 32)

from "resnet.nas" import stem, head, shortcut

network = (if resolution < 64 then (conv(out=C, kernel=3) bn relu) else stem(C))
          stage(C, C, 1) stage(C, 2 * C, 2) stage(2 * C, 4 * C, 2) stage(4 * C, 8 * C, 2)
          head(num_classes)
    require num_classes >= 1
    require in_channels >= 1
    require resolution >= 8  # the total stride is at least 8; below it the last stages see 1x1 maps
    require C >= 4  # the bottleneck branch narrows to C // 4
    require blocks >= 1

stage(c_in, c, s) = unit(c_in, c, s) slot(c) * (blocks - 1) as rest
slot(c) = skip: identity | unit(c, c, 1)

# The chosen branches, summed with the shortcut (identity or a 1x1 projection, as in
# resnet.nas), then relu.
unit(c_in, c, s) = add(pick branches of [basic(c, s), bottleneck(c, s), sep5(c, s), dil3(c, s)],
                       shortcut(c_in, c, s)) relu
    where branches = 1..4

basic(c, s) = conv(out=c, kernel=3, stride=s) bn relu conv(out=c, kernel=3) bn
bottleneck(c, s) = conv(out=c // 4, kernel=1) bn relu conv(out=c // 4, kernel=3, stride=s) bn relu
                   conv(out=c, kernel=1) bn
sep5(c, s) = dwconv(kernel=5, stride=s) bn relu conv(out=c, kernel=1) bn
dil3(c, s) = dwconv(kernel=3, stride=s, dilation=2) bn relu conv(out=c, kernel=1) bn

# The super-network H2SPG trains: every branch of every unit, no slot skipped.
preset supernet(blocks=4) = (
    stage1=(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3]),
            rest=[unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3])),
                  unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3])),
                  unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3]))]),
    stage2=(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3]),
            rest=[unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3])),
                  unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3])),
                  unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3]))]),
    stage3=(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3]),
            rest=[unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3])),
                  unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3])),
                  unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3]))]),
    stage4=(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3]),
            rest=[unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3])),
                  unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3])),
                  unit(unit=(branches=4, pick=[basic, bottleneck, sep5, dil3]))]))

# torchvision.models.resnet18(): the basic branch only, two units per stage.
preset resnet18(blocks=4, resolution=224, num_classes=1000, in_channels=3) = (
    stage1=(unit=(branches=1, pick=[basic]), rest=[unit(unit=(branches=1, pick=[basic])), skip, skip]),
    stage2=(unit=(branches=1, pick=[basic]), rest=[unit(unit=(branches=1, pick=[basic])), skip, skip]),
    stage3=(unit=(branches=1, pick=[basic]), rest=[unit(unit=(branches=1, pick=[basic])), skip, skip]),
    stage4=(unit=(branches=1, pick=[basic]), rest=[unit(unit=(branches=1, pick=[basic])), skip, skip]))
