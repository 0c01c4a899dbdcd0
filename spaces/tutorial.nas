# A small mobile space: the README's tutorial, and the space `make demo` searches.
# Inverted-residual blocks (MobileNetV2/V3 style) sized for 28x28 images: 28 -> 14 -> 7 -> 4.
space tutorial(num_classes: int = 10, in_channels: int = 1, resolution: int = 28)

network = stem(16)
          stage(16, 24, 2)
          stage(24, 40, 2)
          stage(40, 64, 1)
          head(num_classes)
    require num_classes >= 1
    require in_channels >= 1
    require resolution >= 1

stem(c) = conv(out=c, kernel=3, stride=2) bn hswish
head(n) = conv(out=128, kernel=1) bn hswish gap flatten linear(n)

# A stage: a first block that may change width and stride, then 0-2 more blocks.
stage(c_in, c, s) = block(c_in, c, s) block(c, c, 1) * 0..2 as rest

# The skip connection only where input and output shapes agree.
block(c_in, c, s) = if s == 1 and c_in == c
                    then add(identity, mbconv(c_in, c, s))
                    else mbconv(c_in, c, s)

# 1x1 expansion, depthwise kxk, 1x1 projection; one activation per block.
mbconv(c_in, c, s) = conv(out=c_in * expand, kernel=1) bn act(kind=activation)
                     dwconv(kernel={3, 5}, stride=s) bn act(kind=activation)
                     conv(out=c, kernel=1) bn
    where expand = {3, 6}, activation = {relu, hswish}

# The smallest network of the space: every choice at its first value.
preset smallest = (stage1=(block=(mbconv=(expand=3, activation=relu, dwconv=(kernel=3))), rest=[]),
                   stage2=(block=(mbconv=(expand=3, activation=relu, dwconv=(kernel=3))), rest=[]),
                   stage3=(block=(mbconv=(expand=3, activation=relu, dwconv=(kernel=3))), rest=[]))


