# MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019), the design space
# around the paper's two networks, written to be read next to its Table 1 (Large) and
# Table 2 (Small).
#
# The macro skeleton is the paper's: the stem, then stages of bottleneck blocks
# ("bneck") whose output width (#out) and first stride (s) are those of the tables,
# then the 1x1 last conv, pooling and the classifier. What the paper searched (block-wise
# platform-aware NAS, then NetAdapt) is what a derivation chooses:
#
#   per stage   depth: 1..4 blocks (the first one changes width and stride)
#   per block   exp size (the expanded channels), kernel 3 or 5, SE on or off,
#               NL (the activation): relu or hswish
#
# Exp size. NetAdapt shrinks expansion layers in small steps after the block search,
# so the paper's exp sizes are no fixed ratios of the input (184 and 200 from 80 in
# Large, 88 from 24 in Small). The space offers every multiple of 8 from the block's
# input width up to 6x it (MnasNet's largest ratio): `exp = c_in..6 * c_in step 8`.
# That holds every exp size of both tables, and an exp size equal to the input width
# means no expansion conv, as in the first block of each table.
#
# Width. All channel counts are written at width 1.0, as in the tables, and scaled
# like torchvision's `width_mult`: make_divisible(c * width, 8), the residual and the
# optional expansion decided on the scaled widths. The presets are exactly
# torchvision's `mobilenet_v3_large` / `mobilenet_v3_small` (parameters, MACs, layer
# order, BatchNorm eps 0.001 and momentum 0.01); tests/test_mobilenetv3.py checks it.
space mobilenetv3(variant: str = "large", width: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
                  resolution: int = 224, dropout: float = 0.2)

# The parameters' constraints, checked when the space is bound. Any resolution >= 1
# works: every stride-2 conv pads so that a side n becomes ceil(n / 2), never 0, and the
# residuals only join stride-1 blocks. Below 32 (the total stride) the last maps are 1x1.
network = if variant == "large" then large else small
    require variant == "large" or variant == "small"
    require width > 0
    require num_classes >= 1
    require in_channels >= 1
    require resolution >= 1
    require dropout >= 0 and dropout <= 1

# Table 1 and Table 2: stage(input channels, #out, s), then the last conv and classifier.
large = stem stage(16, 16, 1) stage(16, 24, 2) stage(24, 40, 2) stage(40, 80, 2) stage(80, 112, 1) stage(112, 160, 2)
        head(160, 1280)
small = stem stage(16, 16, 2) stage(16, 24, 2) stage(24, 40, 2) stage(40, 48, 1) stage(48, 96, 2)
        head(96, 1024)

stem = conv_bn_act(make_divisible(16 * width, 8), 3, 2, hswish)

# conv2d 1x1 to 6x the last stage's width, pool, then the paper's "conv2d 1x1, NBN"
# rows as torchvision writes them: linear, hswish, dropout, linear.
head(c_in, last) = conv_bn_act(6 * make_divisible(c_in * width, 8), 1, 1, hswish)
                   gap flatten linear(make_divisible(last * width, 8)) hswish dropout(p=dropout) linear(num_classes)

stage(c_in, c, s) = block(c_in, c, s) block(c, c, 1) * 0..3 as rest

# One row of the tables: its choices at width 1.0, then the block at the scaled widths
# (x in, e expanded, y out); the residual where the stride is 1 and the widths agree,
# output + input in torchvision's order.
block(c_in, c, s) = if s == 1 and x == y
                    then add(bneck(x, e, y, kernel, s, use_se, nl), identity)
                    else bneck(x, e, y, kernel, s, use_se, nl)
    where exp = c_in..6 * c_in step 8, kernel = {3, 5}, use_se = {false, true}, nl = {relu, hswish},
          x = make_divisible(c_in * width, 8), e = make_divisible(exp * width, 8), y = make_divisible(c * width, 8)

# torchvision's InvertedResidual: 1x1 expansion (none when e == c_in), depthwise kxk
# with stride s, squeeze-excitation (squeeze to make_divisible(e // 4, 8), relu, then
# hsigmoid: the `se` primitive's defaults), 1x1 linear projection.
bneck(c_in, e, c, k, s, use_se, nl) = (if e == c_in then identity else (conv_bn_act(e, 1, 1, nl) as expand))
                                      (conv_bn_act(e, k, s, nl, e) as depthwise)
                                      (if use_se then se(squeeze=make_divisible(e // 4, 8)) else identity)
                                      project(c)
project(c) = conv(out=c, kernel=1) bn(eps=0.001, momentum=0.01)

# torchvision's Conv2dNormActivation with its MobileNetV3 BatchNorm settings.
conv_bn_act(c, k, s, nl, groups = 1) = conv(out=c, kernel=k, stride=s, groups=groups) bn(eps=0.001, momentum=0.01)
                                       act(kind=nl)

# torchvision.models.mobilenet_v3_large(): Table 1 row by row.
preset mobilenet_v3_large(variant="large") = (large=(
    stage1=(block=(exp=16, kernel=3, use_se=false, nl=relu), rest=[]),
    stage2=(block=(exp=64, kernel=3, use_se=false, nl=relu), rest=[(exp=72, kernel=3, use_se=false, nl=relu)]),
    stage3=(block=(exp=72, kernel=5, use_se=true, nl=relu), rest=[(exp=120, kernel=5, use_se=true, nl=relu),
                                                                  (exp=120, kernel=5, use_se=true, nl=relu)]),
    stage4=(block=(exp=240, kernel=3, use_se=false, nl=hswish), rest=[(exp=200, kernel=3, use_se=false, nl=hswish),
                                                                      (exp=184, kernel=3, use_se=false, nl=hswish),
                                                                      (exp=184, kernel=3, use_se=false, nl=hswish)]),
    stage5=(block=(exp=480, kernel=3, use_se=true, nl=hswish), rest=[(exp=672, kernel=3, use_se=true, nl=hswish)]),
    stage6=(block=(exp=672, kernel=5, use_se=true, nl=hswish), rest=[(exp=960, kernel=5, use_se=true, nl=hswish),
                                                                     (exp=960, kernel=5, use_se=true, nl=hswish)])))

# torchvision.models.mobilenet_v3_small(): Table 2 row by row.
preset mobilenet_v3_small(variant="small") = (small=(
    stage1=(block=(exp=16, kernel=3, use_se=true, nl=relu), rest=[]),
    stage2=(block=(exp=72, kernel=3, use_se=false, nl=relu), rest=[(exp=88, kernel=3, use_se=false, nl=relu)]),
    stage3=(block=(exp=96, kernel=5, use_se=true, nl=hswish), rest=[(exp=240, kernel=5, use_se=true, nl=hswish),
                                                                    (exp=240, kernel=5, use_se=true, nl=hswish)]),
    stage4=(block=(exp=120, kernel=5, use_se=true, nl=hswish), rest=[(exp=144, kernel=5, use_se=true, nl=hswish)]),
    stage5=(block=(exp=288, kernel=5, use_se=true, nl=hswish), rest=[(exp=576, kernel=5, use_se=true, nl=hswish),
                                                                     (exp=576, kernel=5, use_se=true, nl=hswish)])))
