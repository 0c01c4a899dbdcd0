"""The space: checked rules bound to parameters (`space.Space`), their plans with
exact counts (`plan`), derivations (`derivation`), and the operations on them:
mutation and crossover (`operations`), restriction (`restrict`), hypothesis
strategies (`strategies`). Builds on `nasdsl.language`; knows nothing of torch."""
