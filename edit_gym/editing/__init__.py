"""What one edit needs, stage by stage (design.md §7).

Named methods (``methods.py``: which stages each uses, its hyper-parameters as data) run through
``pipeline.py``: ``targets.py`` (the optimized v* or one gradient step) -> ``keys.py`` (subject
keys over the context prefixes of ``prefixes.py``) -> ``spreading.py`` / ``write.py`` (the residual
over the selected layers: ROME, MEMIT, AlphaEdit closed forms) -> ``restraints.py`` (PRUNE, RECT);
``finetune.py`` (FT-L) and ``ultraedit.py`` (UltraEdit) replace target and write. The one-step rules
of the RL loop read answer-position keys and value-gradients (``capture.py``) and live in
``rules.py``; ``hypernet.py`` is the learned (RLEdit) rule; ``covariance.py`` computes C0;
``scores.py`` the teacher-forced scores.
"""
