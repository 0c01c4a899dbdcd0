"""The compiler: a derivation → dependency graph (`graph`) → torch.fx module
(`module`), the standard primitives (`primitives`, `modules`, and `channels`: how
their modules are sliced and their weights adapted), any nn.Module → the
same graph (`trace`), channel groups and pruning (`groups`), export, and
torchvision weights (`compat`). `space.Space` is the Space users hold."""
