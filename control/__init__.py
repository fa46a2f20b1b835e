"""Policies on top of the tokenizer: text encoder, high-level token policy, low-level PPO tracking policy.

Populated by the control issues; ``motiontok`` never imports this package.
"""
