"""Commands made of stages: ``make-pseudo``, ``demo``, and the toy data they start from.

Stages never import each other; these are the only modules that chain them.
"""
