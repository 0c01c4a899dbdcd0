# U-Net (Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
# Segmentation", MICCAI 2015) as an encoder-decoder space for dense prediction, with
# padded convolutions, so the output map is the size of the input:
#
#   global      the depth d (levels, 1 .. max_depth; the paper's network has 5)
#   per level   a width multiplier m of base * 2^(level - 1) channels, the kernel of its
#               two convs, how the level below returns (a 2x2 transposed conv, or bilinear
#               upsampling and a 1x1 conv) and how the skip joins it (concatenated, as
#               the paper, or summed)
#
# Level i runs two conv-bn-relu at its width; above the bottom level it then pools
# 2x2, runs level i + 1, brings the result back up to its width and size, joins it
# with its own output and runs two more convs. A 1x1 conv to num_classes maps the top
# level to per-pixel logits: (num_classes, resolution, resolution). The resolution
# must halve max_depth - 1 times without remainder.
#
# Preset `unet` is the paper's network: 5 levels of 64 .. 1024 channels, 3x3 convs,
# transposed-conv upsampling and concatenated skips.
space unet(num_classes: int = 2, in_channels: int = 1, resolution: int = 64, base: int = 64, max_depth: int = 5)

network = level(1, d) conv(out=num_classes, kernel=1, bias=true)
    where d = 1 .. max_depth
    require num_classes >= 1
    require in_channels >= 1
    require base >= 1
    require max_depth >= 1
    require resolution >= 1 and resolution % 2 ** (max_depth - 1) == 0

level(i, d) = convs(w, k) (if i == d then identity else (skip(i, d, w) convs(w, k)))
    where m = {0.5, 0.75, 1.0}, w = int(base * m * 2 ** (i - 1)), k = {3, 5}

skip(i, d, w) = cat: concat(identity, lower(i, d, w))
              | sum: add(identity, lower(i, d, w))

# The level below, at half the size, brought back to this level's width and size.
lower(i, d, w) = maxpool(kernel=2, stride=2) level(i + 1, d) up(w)

up(w) = transposed: convtranspose(out=w, kernel=2, stride=2, bias=true)
      | bilinear: upsample(scale=2, mode="bilinear") conv(out=w, kernel=1)

convs(w, k) = conv(out=w, kernel=k) bn relu conv(out=w, kernel=k) bn relu

preset unet = (d=5, level=(m=1.0, k=3,
    skip=cat(lower=(level=(m=1.0, k=3,
    skip=cat(lower=(level=(m=1.0, k=3,
    skip=cat(lower=(level=(m=1.0, k=3,
    skip=cat(lower=(level=(m=1.0, k=3), up=transposed))), up=transposed))), up=transposed))), up=transposed))))
