# Vision Transformer (Dosovitskiy et al., "An Image Is Worth 16x16 Words", ICLR 2021) as
# an AutoFormer-style space (Chen et al., "AutoFormer: Searching Transformers for Visual
# Recognition", ICCV 2021):
#
#   global      the embedding dimension (one for the whole residual stream), scaled by
#               `width` (make_divisible(e * width, 4); 1.0 keeps AutoFormer's values)
#   depth       1..14 blocks
#   per block   heads (of head_dim channels each, AutoFormer's 64) and the MLP ratio
#
# The network: patches projected to tokens, a class token, a learned position
# embedding (the input is `resolution` square, in_channels deep), pre-norm blocks (x + attention(norm(x)), then x + mlp(norm(x))), a final
# norm, and a linear classifier on the class token. Layer norms use eps 1e-6, as
# torchvision and timm do.
#
# Presets vit_b_16 and deit_tiny are torchvision's vit_b_16 and timm's
# deit_tiny_patch16_224: tests/test_vit.py checks parameters, MACs and, after loading
# their weights through a key map (nasdsl.compiler.compat), logits. Small settings
# (resolution 28, patch 4, in_channels 1, width 0.125, head_dim 8) make a Fashion-MNIST
# space.
space vit(num_classes: int = 1000, in_channels: int = 3, resolution: int = 224, patch: int = 16,
          head_dim: int = 64, width: float = 1.0)

network = patch_embed(dim=d, patch=patch) cls_token pos_embed
          block(d) block(d) * 0..13 as rest
          layernorm(eps=1e-6) token_pool(mode="cls") linear(num_classes)
    where e = {192, 216, 240, 384, 768}, d = make_divisible(e * width, 4)
    require num_classes >= 1
    require width > 0
    require in_channels >= 1
    require patch >= 1 and resolution >= patch
    require head_dim >= 1

# One encoder block: attention over the tokens, then an MLP on each, both residual.
block(e) = add(identity, layernorm(eps=1e-6) attention(heads=h, head_dim=head_dim))
           add(identity, layernorm(eps=1e-6) mlp(hidden=int(r * e)))
    where h = {3, 4, 6, 12}, r = {3.0, 3.5, 4.0}

# torchvision.models.vit_b_16(): 768 channels, 12 blocks of 12 heads, MLP ratio 4.
preset vit_b_16 = (e=768, block=(h=12, r=4.0), rest=[
    (h=12, r=4.0), (h=12, r=4.0), (h=12, r=4.0), (h=12, r=4.0), (h=12, r=4.0), (h=12, r=4.0),
    (h=12, r=4.0), (h=12, r=4.0), (h=12, r=4.0), (h=12, r=4.0), (h=12, r=4.0)])

# timm's deit_tiny_patch16_224: 192 channels, 12 blocks of 3 heads, MLP ratio 4.
preset deit_tiny = (e=192, block=(h=3, r=4.0), rest=[
    (h=3, r=4.0), (h=3, r=4.0), (h=3, r=4.0), (h=3, r=4.0), (h=3, r=4.0), (h=3, r=4.0),
    (h=3, r=4.0), (h=3, r=4.0), (h=3, r=4.0), (h=3, r=4.0), (h=3, r=4.0)])
