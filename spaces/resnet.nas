# ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) as a
# design space around the paper's Table 1, with torchvision's layout (stride on the
# 3x3 conv of a bottleneck, "ResNet v1.5").
#
#   per stage   width (the 3x3 conv's channels, "planes") and depth 1..8
#   per unit    kernel of the spatial convs: 3 or 5
#   global      the unit: basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 x4), a parameter
#
# Presets resnet18 and resnet50 are torchvision's models; tests/test_resnet.py
# checks parameters and MACs against them.
#
# Any resolution >= 1 works: every stride-2 layer (the 7x7 conv, the max pool, the
# first unit of stages 2-4 and its 1x1 shortcut) pads so that a side n becomes
# ceil(n / 2), never 0, and body and shortcut agree. Below 32 the last maps are 1x1.
space resnet(unit: str = "basic", num_classes: int = 1000, in_channels: int = 3, resolution: int = 224)

network = stem(64)
          stage(64, w1, 1) stage(w1 * e, w2, 2) stage(w2 * e, w3, 2) stage(w3 * e, w4, 2)
          head(num_classes)
    where e = if unit == "basic" then 1 else 4,
          w1 = {32, 48, 64, 80, 96}, w2 = {64, 96, 128, 160, 192},
          w3 = {128, 192, 256, 320, 384}, w4 = {256, 384, 512, 640, 768}
    require unit == "basic" or unit == "bottleneck"
    require num_classes >= 1
    require in_channels >= 1
    require resolution >= 1

# conv1 7x7/2, bn, relu, 3x3/2 max pool.
stem(c) = conv(out=c, kernel=7, stride=2) bn relu maxpool(kernel=3, stride=2)
head(n) = gap flatten linear(n)

# A stage: a first unit that may change width and stride, then 0-7 more.
stage(c_in, planes, s) = block(c_in, planes, s) block(planes * e, planes, 1) * 0..7 as rest
    where e = if unit == "basic" then 1 else 4

# The residual unit: the body plus the shortcut (a 1x1 projection where the shape changes).
block(c_in, planes, s) = add(body(planes, s, k), shortcut(c_in, planes * e, s)) relu
    where e = if unit == "basic" then 1 else 4, k = {3, 5}

body(p, s, k) = if unit == "basic"
                then (conv(out=p, kernel=k, stride=s) bn relu conv(out=p, kernel=k) bn)
                else (conv(out=p, kernel=1) bn relu conv(out=p, kernel=k, stride=s) bn relu conv(out=4 * p, kernel=1) bn)

shortcut(c_in, c, s) = if s == 1 and c_in == c then identity else (conv(out=c, kernel=1, stride=s) bn)

# torchvision.models.resnet18(): basic units, [2, 2, 2, 2].
preset resnet18(unit="basic") = (w1=64, w2=128, w3=256, w4=512,
    stage1=(block=(k=3), rest=[(k=3)]), stage2=(block=(k=3), rest=[(k=3)]),
    stage3=(block=(k=3), rest=[(k=3)]), stage4=(block=(k=3), rest=[(k=3)]))

# torchvision.models.resnet50(): bottleneck units, [3, 4, 6, 3].
preset resnet50(unit="bottleneck") = (w1=64, w2=128, w3=256, w4=512,
    stage1=(block=(k=3), rest=[(k=3), (k=3)]),
    stage2=(block=(k=3), rest=[(k=3), (k=3), (k=3)]),
    stage3=(block=(k=3), rest=[(k=3), (k=3), (k=3), (k=3), (k=3)]),
    stage4=(block=(k=3), rest=[(k=3), (k=3)]))
