"""H2SPG, OTOv3's hierarchical half-space projected gradient: an optimizer that trains
a network and drives whole removal structures to exactly zero, never so many or such
ones that what is left stops being a network.

The groups are the erasing graph's structures (`nasdsl.compiler.erasing`): each
structure's variables (every parameter of its layers, or its gate entry in a gated
sum). The optimizer (`../shared/design/otov3_h2spg.md` has the paper and the released
DHSPG it builds on):

1. warm-up: `warmup_steps` plain steps (SGD with momentum and weight decay);
2. selection, once, at the first step after the warm-up: each group's saliency, as the
   released DHSPG scores it: half the cosine of the group's variables and its gradient
   (the gradient already pushing them to zero), half the inverse of its root-mean-square
   magnitude `sqrt(|g|) / ||x||` (per element: groups differ in size), each normalised to [0, 1] over the groups; most redundant first, a
   group is taken when the network without it and what was taken (and the structures
   inside it, which go with it) is still valid (`Erasing.check`, and `admissible(names)`
   when given: a space's own rules, such as a pick that keeps a branch), until `target`
   of the groups are taken. `hierarchical=False` takes the top ones by score without asking:
   the ablation, which can leave an invalid network;
3. the hybrid step: the other variables take the plain step; a redundant group (only
   the outermost taken, which covers the ones inside) takes a gradient step with a
   group-lasso push `lam_g * x / ||x||` whose base is `lam` times the group's norm when
   it was selected (a push in proportion to the group: groups here differ 10^4-fold in
   norm, from a gate entry to a stage's branch; with `lam * lr` the share of it removed
   per step, a run of a few hundred steps gets its groups to zero), raised to
   `lam_amplify` times the gradient's pull away from zero when it pulls (at most
   `lam_max` times the base, DHSPG's clip); the
   half-space projection then sets the group to zero when the trial point leaves
   `{z: <z, x> >= epsilon ||x||^2}`, and a zero group stays zero.

`zero_redundant()` sets every taken group to zero at once (the end of training: the
erased network is then exactly the selected one); `group_sparsity()` is the share of
all groups erased (their variables all zero, or inside such a group), `zero_groups()`
their names.
"""

from __future__ import annotations

import torch

from nasdsl.language.errors import NasError


class H2SPG(torch.optim.Optimizer):
    def __init__(self, module: torch.nn.Module, erasing, *, lr: float, momentum: float = 0.9,
                 weight_decay: float = 0.0, target: float = 0.5, warmup_steps: int = 0, lam: float = 1e-3,
                 lam_amplify: float = 1.1, lam_max: float = 10.0, epsilon: float = 0.0, hierarchical: bool = True,
                 admissible=None):
        if not 0 <= target <= 1:
            raise NasError(f"the target group sparsity is a share of the groups in [0, 1], got {target}")
        if not 0 <= epsilon < 1:
            raise NasError(f"the half-space epsilon is in [0, 1), got {epsilon}")
        if not erasing.structures:
            raise NasError("this network has no removal structures for H2SPG to zero",
                           hint="its sums have no branch whose parameters zero it (see nasdsl.compiler.erasing)")
        super().__init__(list(module.parameters()), dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.erasing = erasing
        self.admissible = admissible  # names -> bool: what the network's source adds to validity (a space's rules)
        self.named = dict(module.named_parameters())
        self.variables = {name: tuple(v) for name, v in erasing.all_variables(module).items()}
        self.settings = dict(warmup_steps=warmup_steps, lam=lam, lam_amplify=lam_amplify, lam_max=lam_max,
                             epsilon=epsilon, hierarchical=hierarchical)
        self.count = round(target * len(self.variables))
        self.steps = 0
        self.redundant: tuple | None = None  # the taken groups, once selected
        self.zero: set = set()  # the taken groups already projected to zero
        self.scale: dict = {}  # a taken group's norm when it was taken: its push's unit

    # ---- the groups' variables as one vector -------------------------------------------------
    def _views(self, name: str, grad: bool = False) -> list[torch.Tensor]:
        views = []
        for param, index in self.variables[name]:
            t = self.named[param].grad if grad else self.named[param]
            t = torch.zeros_like(self.named[param]) if t is None else t
            views.append(t.detach().view(-1) if index is None else t.detach()[index:index + 1])
        return views

    def _vector(self, name: str, grad: bool = False) -> torch.Tensor:
        return torch.cat(self._views(name, grad))

    def _zero(self, name: str) -> None:
        for view in self._views(name):
            view.zero_()

    def _put(self, name: str, value: torch.Tensor) -> None:
        offset = 0
        for view in self._views(name):
            view.copy_(value[offset:offset + view.numel()].view_as(view))
            offset += view.numel()

    # ---- selection ---------------------------------------------------------------------------
    def saliency(self) -> dict[str, float]:
        """Each group's redundancy score (higher: more redundant), from its current
        variables and gradient."""
        cos, inv = {}, {}
        for name in self.variables:
            x, g = self._vector(name), self._vector(name, grad=True)
            norm = float(x.norm())
            cos[name] = float(x @ g) / max(norm * float(g.norm()), 1e-12)
            inv[name] = x.numel() ** 0.5 / max(norm, 1e-12)  # 1 / the root-mean-square magnitude
        cos, inv = _unit(cos), _unit(inv)
        return {n: 0.5 * cos[n] + 0.5 * inv[n] for n in self.variables}

    def select(self, scores: dict[str, float]) -> tuple:
        """The groups to zero, most redundant first, `self.count` of them with the
        structures inside them; hierarchical: only while the network stays valid."""
        structures = self.erasing.structures
        taken: list = []
        covered: set = set()
        for name in sorted(scores, key=lambda n: (-scores[n], n)):
            if name in covered:
                continue
            inside = _inside(structures, name)
            if len(covered | inside) > self.count:
                continue
            if self.settings["hierarchical"] and not self._valid(covered | inside):
                continue
            taken.append(name)
            covered |= inside
            if len(covered) == self.count:
                break
        return tuple(n for n in taken if not any(o != n and n in _inside(structures, o) for o in taken))

    def _valid(self, names: set) -> bool:
        return bool(self.erasing.check(names)) and (self.admissible is None or self.admissible(names))

    # ---- the step ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.steps += 1
        if self.redundant is None and self.steps > self.settings["warmup_steps"]:
            self.redundant = self.select(self.saliency()) if self.count else ()
            self.scale = {n: float(self._vector(n).norm()) for n in self.redundant}
        trials = {n: self._trial(n) for n in self.redundant or () if n not in self.zero}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                if group["momentum"]:
                    buf = self.state[p].get("momentum")
                    buf = self.state[p]["momentum"] = d.clone() if buf is None else buf.mul_(group["momentum"]).add_(d)
                    d = buf
                p.add_(d, alpha=-group["lr"])
        for name, value in trials.items():
            if float(value.norm()) == 0.0:
                self.zero.add(name)
            self._put(name, value)
            self._still(name)
        for name in self.zero:
            self._zero(name)
        return loss

    def _trial(self, name: str) -> torch.Tensor:
        """The group's half-space step from its values before this step."""
        s, lr = self.settings, self.param_groups[0]["lr"]
        x, g = self._vector(name).clone(), self._vector(name, grad=True)
        norm = float(x.norm())
        if norm == 0.0:
            return x
        base, pull = s["lam"] * self.scale.get(name, norm), -float(x @ g) / norm
        lam = base
        if pull > 0:  # the loss wants the group larger: push harder than it pulls, within bounds
            lam = min(max(base, s["lam_amplify"] * pull), s["lam_max"] * base)
        trial = x - lr * (g + lam * x / norm)
        if float(trial @ x) < s["epsilon"] * norm ** 2:
            return torch.zeros_like(x)
        return trial

    def _still(self, name: str) -> None:
        """A redundant group's elements carry no momentum into the plain step."""
        for param, index in self.variables[name]:
            buf = self.state[self.named[param]].get("momentum")
            if buf is not None:
                (buf if index is None else buf[index:index + 1]).zero_()

    # ---- the end and what it reached ---------------------------------------------------------
    @torch.no_grad()
    def zero_redundant(self) -> None:
        """Every taken group to zero now (the end of training)."""
        for name in self.redundant or ():
            self.zero.add(name)
            self._zero(name)
            self._still(name)

    def zero_groups(self) -> tuple:
        """The groups whose variables are all zero, and those inside them (erased with
        them: an option's gate at zero erases the branches in it)."""
        zero = [n for n in self.variables if not bool(self._vector(n).any())]
        removed = set().union(*(_inside(self.erasing.structures, n) for n in zero))
        return tuple(n for n in self.variables if n in removed)

    def group_sparsity(self) -> float:
        return len(self.zero_groups()) / len(self.variables)

    def state_dict(self):
        return {**super().state_dict(), "h2spg": {"steps": self.steps, "redundant": self.redundant,
                                                  "zero": sorted(self.zero), "scale": self.scale}}

    def load_state_dict(self, state):
        state = dict(state)
        own = state.pop("h2spg")
        super().load_state_dict(state)
        self.steps = own["steps"]
        self.redundant = None if own["redundant"] is None else tuple(own["redundant"])
        self.zero = set(own["zero"])
        self.scale = dict(own["scale"])


def _unit(values: dict) -> dict:
    """Min-max normalised to [0, 1] (all 0 when they are all equal)."""
    low, high = min(values.values()), max(values.values())
    return {k: (v - low) / (high - low) if high > low else 0.0 for k, v in values.items()}


def _inside(structures: dict, name: str) -> set:
    """The structure and every structure nested in it."""
    found, frontier = {name}, [name]
    while frontier:
        for child in structures[frontier.pop()].children:
            found.add(child)
            frontier.append(child)
    return found
