"""GNN baselines of Table 2 (appendix C): hit classifiers and an Exa.TrkX-style track finder.

Modules: graph (hit features, kNN/radius edges), loop (the training loop), hit_gnn (GATConv,
GCNConv, GraphConv, SAGEConv hit classifiers), exatrkx (metric learning -> radius graph ->
interaction network -> connected components), run (what `fm4npp finetune --model <gnn>` calls).
torch_geometric is imported inside these modules only, never by this package's import.
"""
